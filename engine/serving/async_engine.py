"""`AsyncEngine`: the serving loop on a background thread, with per-request async streams for the studio/API.

    async for update in engine.stream(prompt_token_ids, params):   # RequestUpdate: text/token deltas, progress, stats
        ...
Leaving the loop early (a closed browser tab, a dropped HTTP client) aborts the request at once.

Faults, from the smallest up — nobody ever waits on a dead loop:
- a request that fails on its own (bad input, a bad logits row) gets an error update; the others keep running;
- a step that raises ends the requests it was running with an error; waiting ones keep going;
- when the recovery itself raises (the tables may be inconsistent), the engine `reset()`s its bookkeeping (weights
  stay), every request it held ends with an error, and serving goes on (at most `max_restarts` times);
- past that, or if a reset fails, the loop is dead: every stream and `call` waiter is woken with the error, new
  requests fail at once, `health()` says so and `on_fatal(error)` runs (the app exits non-zero for a supervisor).
"""
import asyncio
import logging
import queue
import threading
import time
import uuid

from .llm_engine import LLMEngine
from .outputs import RequestUpdate
from .sampling import SamplingParams

log = logging.getLogger(__name__)
WATCH_S = 0.5  # how often a waiter checks that the loop is alive


class EngineDead(RuntimeError):
    """The serving loop stopped for good; requests fail with this until the process restarts."""


class AsyncEngine:
    def __init__(self, engine: LLMEngine, on_fatal=None, max_restarts: int = 3):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.on_fatal, self.max_restarts = on_fatal, max_restarts
        self.error: str | None = None  # why the loop died; None while it serves
        self.restarts = 0
        self.step_started: float | None = None  # monotonic time the running step began; None between steps
        self._commands: queue.Queue = queue.Queue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="m1-engine", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self.error is None and self._thread.is_alive()

    async def stream(self, prompt_token_ids: list[int], params: SamplingParams | None = None,
                     request_id: str | None = None, keep_at: list[int] = (), *, session_id: str | None = None,
                     **options):
        """Yield RequestUpdates until the request finishes; closing the generator early aborts the request.
        `keep_at` and `options` (starts_in_reasoning, thinking_budget): see LLMEngine.add_request. `session_id`
        routes a turn to its replica in multi-replica mode (engine.cluster); one engine has nothing to route."""
        request_id = request_id or uuid.uuid4().hex
        if not self.alive:
            yield self._dead_update(request_id)
            return
        updates: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), updates)
        self._send("add", request_id, list(prompt_token_ids), params or SamplingParams(), list(keep_at), options)
        finished = False
        try:
            while not finished:
                try:
                    update = await asyncio.wait_for(updates.get(), WATCH_S)
                except asyncio.TimeoutError:
                    if self.alive:
                        continue
                    update = self._dead_update(request_id)
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

    def call(self, fn, *args, timeout: float | None = None):
        """Run `fn(engine, *args)` on the engine thread between steps and return its result (its exception is
        raised here). Raises EngineDead if the loop is dead, TimeoutError after `timeout` seconds."""
        done, box = threading.Event(), {}

        def run():
            try:
                box["result"] = fn(self.engine, *args)
            except Exception as e:  # noqa: BLE001 - handed to the caller
                box["error"] = e

        deadline = None if timeout is None else time.monotonic() + timeout
        self._send("call", run, done)
        while not done.wait(WATCH_S):
            if not self.alive:
                raise EngineDead(self._dead_message())
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the engine thread did not answer within {timeout} s")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def health(self) -> dict:
        """Read without the engine thread (answers during a long step): alive, error, restarts, running requests,
        and how long the current step has been running (0 when idle)."""
        started = self.step_started
        busy = 0.0 if started is None else time.monotonic() - started
        return {"alive": self.alive, "error": self.error, "restarts": self.restarts,
                "running_requests": len(self.engine.requests), "step_running_s": round(busy, 3),
                "preemptions": self.engine.scheduler.num_preemptions}

    def shutdown(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=10)

    # --- the engine thread ------------------------------------------------------------------------------------
    def _send(self, *command) -> None:
        self._commands.put(command)
        self._wake.set()

    def _publish(self, update: RequestUpdate) -> None:
        target = self._streams.get(update.request_id)
        if target is not None:
            loop, q = target
            try:
                loop.call_soon_threadsafe(q.put_nowait, update)
            except RuntimeError:  # the waiter's event loop is closed: nobody is listening
                pass

    def _run_command(self, command) -> None:
        kind, *args = command
        if kind == "add":
            request_id, ids, params, keep_at, options = args
            try:
                self.engine.add_request(ids, params, request_id, keep_at, **options)
            except Exception as e:  # noqa: BLE001 - bad input ends this request only
                self._publish(_error(request_id, str(e)))
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
        try:
            while not self._stopped:
                try:
                    self._serve_once()
                except Exception as e:  # noqa: BLE001 - the recovery itself failed: rebuild the bookkeeping
                    log.exception("engine loop failed; resetting the engine's bookkeeping")
                    self._restart(e)
        except BaseException as e:  # noqa: BLE001 - anything else ends the loop, loudly
            self._die(e)

    def _serve_once(self) -> None:
        while not self._commands.empty():
            self._run_command(self._commands.get())
        if not self.engine.has_unfinished:
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            return
        self.step_started = time.monotonic()
        try:
            updates = self.engine.step()
        except Exception as e:  # noqa: BLE001 - end the step's requests, keep serving
            log.exception("engine step failed")
            updates = self._fail_running(e)
        finally:
            self.step_started = None
        for update in updates:
            self._publish(update)

    def _fail_running(self, error: Exception) -> list[RequestUpdate]:
        """A step raised: end the requests it was running (their resources freed), keep serving the rest."""
        failed = [s.request_id for s in list(self.engine.scheduler.running)]
        for rid in failed:
            self.engine.abort(rid)
        return [_error(rid, f"engine error: {error}") for rid in failed]

    def _restart(self, error: Exception) -> None:
        if self.restarts >= self.max_restarts:
            raise EngineDead(f"the engine failed {self.restarts + 1} times; last error: {error}") from error
        self.restarts += 1
        for rid in self.engine.reset():
            self._publish(_error(rid, f"engine error (the engine restarted): {error}"))

    def _die(self, error: BaseException) -> None:
        self.error = f"{type(error).__name__}: {error}"
        log.critical("the engine loop stopped: %s", self.error)
        for rid in list(self._streams):
            self._publish(self._dead_update(rid))
        while not self._commands.empty():
            command = self._commands.get()
            if command[0] == "call":
                command[2].set()
        if self.on_fatal is not None:
            self.on_fatal(error)

    def _dead_message(self) -> str:
        return f"the engine stopped ({self.error or 'its thread exited'}); the server must be restarted"

    def _dead_update(self, request_id: str) -> RequestUpdate:
        return _error(request_id, self._dead_message())


def _error(request_id: str, message: str) -> RequestUpdate:
    return RequestUpdate(request_id, finished=True, finish_reason="error", error=message)
