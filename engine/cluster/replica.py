"""`EngineReplica`: one engine (LLMEngine + AsyncEngine) inside one Ray Serve replica.

`launch.engine_deployment` wraps this class with `serve.deployment` (GPUs per replica = its tensor-parallel size,
CPUs only for a CPU engine). Callers reach it through a DeploymentHandle with the session-affinity router:

    handle.options(method_name="generate", stream=True, session_id=sid).remote(request)  # replica id, then updates
    handle.options(method_name="abort").remote(request_id, replica=rid)                  # pinned to that replica

`generate` first yields the replica's id (so the caller can pin its controls), then the engine's RequestUpdates.
When the caller cancels or drops the stream, Serve cancels this generator and the engine stream's cleanup aborts
the request, freeing its slot.
"""
import asyncio
import os
import time

from ..serving.async_engine import AsyncEngine
from ..serving.llm_engine import EngineArgs, LLMEngine

SESSION_TTL_S = 3600.0  # a session not seen for this long no longer counts as held here


def replica_id() -> str:
    """This replica's unique id in the deployment (the process id outside Ray Serve, e.g. in a unit test)."""
    try:
        from ray import serve
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - not inside a replica
        return f"local-{os.getpid()}"


class EngineReplica:
    def __init__(self, model: str, engine: dict, engine_args: dict, torch_threads: int | None = None):
        if torch_threads:
            import torch
            torch.set_num_threads(torch_threads)
        llm = LLMEngine(model, args=EngineArgs(**engine_args), **engine)
        self.engine = AsyncEngine(llm)
        self.replica = replica_id()
        self.sessions: dict[str, float] = {}  # session id -> last turn here (monotonic seconds)

    async def generate(self, request: dict):
        """The replica's id, then the RequestUpdates of `request` (AsyncEngine.stream's arguments + session_id)."""
        request = dict(request)
        session = request.pop("session_id", None)
        if session:
            self.sessions[session] = time.monotonic()
        yield self.replica
        async for update in self.engine.stream(**request):
            yield update

    def abort(self, request_id: str, replica: str | None = None) -> None:
        self.engine.abort(request_id)

    def force_tokens(self, request_id: str, token_ids: list[int], replica: str | None = None) -> None:
        self.engine.force_tokens(request_id, token_ids)

    def info(self, replica: str | None = None) -> dict:
        """What callers need to know about the engine: window, limits, state reuse, device."""
        llm = self.engine.engine
        return {"replica": self.replica, "max_model_len": llm.max_model_len, "device": str(llm.device),
                "max_num_seqs": llm.args.max_num_seqs, "state_reuse": llm.args.enable_state_reuse,
                "shared_state_dir": llm.args.shared_state_dir}

    async def status(self, replica: str | None = None) -> dict:
        """Running requests, sessions served within the last hour, and saved-state counters of this replica."""
        now = time.monotonic()
        self.sessions = {s: t for s, t in self.sessions.items() if now - t < SESSION_TTL_S}
        stats = await asyncio.to_thread(self.engine.call, lambda llm: {"running": len(llm.requests), "states": llm.state_stats()})
        shared = self.engine.engine.keeper.shared if self.engine.engine.keeper else None
        if shared is not None:
            stats["shared_states"] = {"saved": shared.saved, "restored": shared.restored, "refused": shared.refused}
        return {"replica": self.replica, "sessions": len(self.sessions), **stats}

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
            engine.engine.close()
