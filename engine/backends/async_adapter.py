"""Another backend (transformers, vLLM) behind the interface the studio uses from `AsyncEngine`: async `stream`
of RequestUpdates, `abort`, `call`. Each request's synchronous token stream runs on its own thread.

What only our engine does is reported as absent, not faked: no state reuse across turns (`args.enable_state_reuse`
is False, so the UI says so), and no forced tokens (the thinking budget and "answer now" need `--backend m1`).
"""
import asyncio
import threading
import uuid
from types import SimpleNamespace

from ..serving.outputs import RequestUpdate
from ..serving.sampling import SamplingParams


class BackendAsyncEngine:
    def __init__(self, backend, max_model_len: int):
        self.backend, self.tokenizer = backend, backend.tokenizer
        self.engine = SimpleNamespace(max_model_len=max_model_len, requests={}, close=lambda: None,
                                      args=SimpleNamespace(enable_state_reuse=False, max_num_seqs=1))
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()  # one generation at a time: these backends are driven synchronously

    async def stream(self, prompt_token_ids: list[int], params: SamplingParams | None = None,
                     request_id: str | None = None, keep_at=(), *, session_id: str | None = None, **options):
        """RequestUpdates of one request; leaving early stops the backend's generation. `keep_at` and the
        engine-only options (thinking_budget, starts_in_reasoning) have no effect here."""
        rid = request_id or uuid.uuid4().hex
        loop, updates, cancel = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()
        self._cancel[rid] = cancel
        self.engine.requests[rid] = True
        worker = threading.Thread(target=self._run, args=(rid, list(prompt_token_ids), params, loop, updates, cancel),
                                  daemon=True)
        worker.start()
        finished = False
        try:
            while not finished:
                update = await updates.get()
                finished = update.finished
                yield update
        finally:
            cancel.set()
            self._cancel.pop(rid, None)
            self.engine.requests.pop(rid, None)

    def _run(self, rid, ids, params, loop, updates, cancel) -> None:
        with self._lock:
            gen = self.backend.stream(ids, params or SamplingParams(), rid)
            try:
                for update in gen:
                    loop.call_soon_threadsafe(updates.put_nowait, update)
                    if cancel.is_set() or update.finished:
                        break
            except Exception as e:  # noqa: BLE001 - one failed request must not take the server down
                loop.call_soon_threadsafe(updates.put_nowait, RequestUpdate(
                    rid, finished=True, finish_reason="error", error=f"{self.backend.name} backend: {e}"))
            finally:
                gen.close()

    def abort(self, request_id: str) -> None:
        if request_id in self._cancel:
            self._cancel[request_id].set()

    def force_tokens(self, request_id: str, token_ids: list[int]) -> None:
        """Not possible on this backend (it owns its generation loop); "answer now" does nothing here."""

    def call(self, fn, *args):
        return fn(self.engine, *args)

    def shutdown(self) -> None:
        for cancel in list(self._cancel.values()):
            cancel.set()
