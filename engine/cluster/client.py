"""`ReplicaEngine`: the studio's engine interface (AsyncEngine's `stream`, `abort`, `force_tokens`, `call`,
`tokenizer`, `engine.max_model_len`) on engine replicas behind a Ray Serve DeploymentHandle.

    engine = ReplicaEngine(handle, tokenizer)            # launch.start_replicas builds it
    async for update in engine.stream(ids, params, request_id, keep_at, session_id="chat-42"):
        ...
A turn with a session id goes to the session's replica (engine.cluster.router); the final update's stats name the
replica (`stats["replica"]`). A replica lost before the request produced a token is retried on another one (the
turn re-reads its history there, or restores it from a shared --state-dir); lost after that, the stream ends with
an error update saying so (never hangs). Leaving the stream early cancels it on the replica, which aborts it.
"""
import asyncio
import uuid
from collections import OrderedDict
from contextlib import aclosing
from types import SimpleNamespace

from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import ReplicaUnavailableError

from ..serving.outputs import RequestUpdate
from ..serving.sampling import SamplingParams

LOST = (RayActorError, ActorUnavailableError, ReplicaUnavailableError)
RETRIES = 3
MAX_SESSIONS = 100_000  # sessions remembered for the per-replica counts (least recently served dropped first)


class ReplicaEngine:
    def __init__(self, handle, tokenizer, *, app_name: str, deployment: str, on_shutdown=None):
        self.handle, self.tokenizer, self._on_shutdown = handle, tokenizer, on_shutdown
        self.replica_prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
        info = handle.options(method_name="info").remote().result()
        self.device = info["device"]
        self.running: dict[str, str | None] = {}  # request id -> replica serving it (None until it said)
        self.engine = SimpleNamespace(max_model_len=info["max_model_len"], requests=self.running,
                                      args=SimpleNamespace(enable_state_reuse=info["state_reuse"],
                                                           max_num_seqs=info["max_num_seqs"]),
                                      close=lambda: None)
        self.session_replica: OrderedDict[str, str] = OrderedDict()  # session -> replica of its last turn

    async def stream(self, prompt_token_ids: list[int], params: SamplingParams | None = None,
                     request_id: str | None = None, keep_at=(), *, session_id: str | None = None, **options):
        """RequestUpdates of one request on the session's replica (see the module docstring)."""
        rid = request_id or uuid.uuid4().hex
        request = {"prompt_token_ids": list(prompt_token_ids), "params": params or SamplingParams(),
                   "request_id": rid, "keep_at": list(keep_at), "session_id": session_id, **options}
        handle = self.handle.options(method_name="generate", stream=True, session_id=session_id or "")
        self.running[rid] = None
        try:
            for attempt in range(RETRIES + 1):
                outcome = []
                async with aclosing(self._attempt(handle, request, outcome, last=attempt == RETRIES)) as updates:
                    async for update in updates:
                        yield update
                if outcome != ["retry"]:
                    return
                await asyncio.sleep(0.2 * (attempt + 1))  # let Serve drop the dead replica from its set
        finally:
            self.running.pop(rid, None)

    async def _attempt(self, handle, request: dict, outcome: list, last: bool):
        rid, replica, produced, finished = request["request_id"], None, False, False
        responses = handle.remote(request)
        try:
            async for item in responses:
                if isinstance(item, str):
                    replica = self.running[rid] = item
                    continue
                produced |= bool(item.token_ids or item.text)
                finished = item.finished
                if finished:
                    item.stats = {**(item.stats or {}), "replica": replica}
                    if request["session_id"]:
                        self._served(request["session_id"], replica)
                yield item
        except LOST as exc:
            if not produced and not last:
                outcome.append("retry")
                return
            finished = True
            yield RequestUpdate(rid, finished=True, finish_reason="error",
                                error=f"engine replica {replica or '?'} was lost during this reply "
                                      f"({type(exc).__name__}); send the turn again to continue on another replica")
        finally:
            if not finished:
                responses.cancel()  # the caller left: the replica's stream is cancelled and aborts the request

    def _served(self, session_id: str, replica: str) -> None:
        self.session_replica[session_id] = replica
        self.session_replica.move_to_end(session_id)
        while len(self.session_replica) > MAX_SESSIONS:
            self.session_replica.popitem(last=False)

    def abort(self, request_id: str) -> None:
        replica = self.running.get(request_id)
        if replica is not None:
            self.handle.options(method_name="abort").remote(request_id, replica=replica)

    def force_tokens(self, request_id: str, token_ids: list[int]) -> None:
        """Append tokens to a running generation on the replica that runs it (e.g. "answer now")."""
        replica = self.running.get(request_id)
        if replica is not None:
            self.handle.options(method_name="force_tokens").remote(request_id, list(token_ids), replica=replica)

    def call(self, fn, *args):
        """`fn(engine, *args)` on the local view (running requests, window, limits): there is no engine here."""
        return fn(self.engine, *args)

    def live_replicas(self) -> list[str]:
        """Unique ids of the engine replicas whose actors are alive now (the cluster's named actors)."""
        import ray
        names = ray.util.list_named_actors(all_namespaces=True)
        return sorted(a["name"][len(self.replica_prefix):] for a in names if a["name"].startswith(self.replica_prefix))

    def replicas(self) -> list[dict]:
        """For /health and the studio's banner: each live replica's status (blocking, at most ~2 s)."""
        return self.replica_status(self.live_replicas())

    def replica_status(self, replica_ids, timeout_s: float = 2.0) -> list[dict]:
        """Status of each live replica (blocking; not from an event loop): running requests, saved-state counters,
        and `sessions` = sessions whose last turn it served (as seen by this client)."""
        calls = [(r, self.handle.options(method_name="status").remote(replica=r)) for r in replica_ids]
        per_replica = {}
        for replica, call in calls:
            try:
                status = call.result(timeout_s=timeout_s)
                per_replica[replica] = {**status, "alive": status["replica"] == replica}
            except Exception as exc:  # noqa: BLE001 - a dying replica is reported, not raised
                per_replica[replica] = {"replica": replica, "alive": False, "error": type(exc).__name__}
        for info in per_replica.values():
            info["sessions"] = sum(1 for r in self.session_replica.values() if r == info["replica"])
        return list(per_replica.values())

    def shutdown(self) -> None:
        if self._on_shutdown is not None:
            self._on_shutdown()
