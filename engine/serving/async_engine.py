"""`AsyncEngine`: the serving loop on a background thread, with per-request async streams for the studio/API.

    async for update in engine.stream(prompt_token_ids, params):   # RequestUpdate: text/token deltas, progress, stats
        ...
Leaving the loop early (a closed browser tab, a dropped HTTP client) aborts the request at once. One request that
fails (bad input, or a step that raises) gets an error update; the others keep running.
"""
import asyncio
import logging
import queue
import threading
import uuid

from .llm_engine import LLMEngine
from .outputs import RequestUpdate
from .sampling import SamplingParams

log = logging.getLogger(__name__)


class AsyncEngine:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self._commands: queue.Queue = queue.Queue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="m1-engine", daemon=True)
        self._thread.start()

    async def stream(self, prompt_token_ids: list[int], params: SamplingParams | None = None,
                     request_id: str | None = None, keep_at: list[int] = (), *, session_id: str | None = None,
                     **options):
        """Yield RequestUpdates until the request finishes; closing the generator early aborts the request.
        `keep_at` and `options` (starts_in_reasoning, thinking_budget): see LLMEngine.add_request. `session_id`
        routes a turn to its replica in multi-replica mode (engine.cluster); one engine has nothing to route."""
        request_id = request_id or uuid.uuid4().hex
        updates: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), updates)
        self._send("add", request_id, list(prompt_token_ids), params or SamplingParams(), list(keep_at), options)
        finished = False
        try:
            while not finished:
                update = await updates.get()
                finished = update.finished
                yield update
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        self._send("abort", request_id)

    def force_tokens(self, request_id: str, token_ids: list[int]) -> None:
        """Append tokens to a running generation between two steps (e.g. close the think block: "answer now")."""
        self._send("force", request_id, list(token_ids))

    def call(self, fn, *args):
        """Run `fn(engine, *args)` on the engine thread between steps and wait for its result (e.g. stats)."""
        done, box = threading.Event(), {}
        self._send("call", lambda: box.update(result=fn(self.engine, *args)), done)
        done.wait()
        return box.get("result")

    def shutdown(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=10)

    def _send(self, *command) -> None:
        self._commands.put(command)
        self._wake.set()

    def _publish(self, update: RequestUpdate) -> None:
        target = self._streams.get(update.request_id)
        if target is not None:
            loop, q = target
            loop.call_soon_threadsafe(q.put_nowait, update)

    def _run_command(self, command) -> None:
        kind, *args = command
        if kind == "add":
            request_id, ids, params, keep_at, options = args
            try:
                self.engine.add_request(ids, params, request_id, keep_at, **options)
            except Exception as e:  # bad input ends this request only
                self._publish(RequestUpdate(request_id, finished=True, finish_reason="error", error=str(e)))
        elif kind == "abort":
            self.engine.abort(args[0])
        elif kind == "force":
            self.engine.force_tokens(*args)
        elif kind == "call":
            fn, done = args
            try:
                fn()
            finally:
                done.set()

    def _loop(self) -> None:
        while not self._stopped:
            while not self._commands.empty():
                self._run_command(self._commands.get())
            if not self.engine.has_unfinished:
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                updates = self.engine.step()
            except Exception as e:
                log.exception("engine step failed")
                updates = self._fail_running(e)
            for update in updates:
                self._publish(update)

    def _fail_running(self, error: Exception) -> list[RequestUpdate]:
        """A step raised: end the requests it was running (their resources freed), keep serving the rest."""
        failed = [s.request_id for s in list(self.engine.scheduler.running)]
        for rid in failed:
            self.engine.abort(rid)
        return [RequestUpdate(rid, finished=True, finish_reason="error", error=f"engine error: {error}") for rid in failed]
