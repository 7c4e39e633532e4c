"""Our engine behind the backend interface: a synchronous `stream` that steps the LLMEngine (the studio's async
path uses AsyncEngine directly). The only backend with state reuse across turns."""
import threading

from ..serving.llm_engine import LLMEngine
from .base import Backend


class M1Backend(Backend):
    name = "m1"
    supports_state_reuse = True

    def __init__(self, model_dir: str, **engine_kwargs):
        self.engine = LLMEngine(model_dir, **engine_kwargs)
        super().__init__(self.engine.tokenizer)
        self.lock = threading.Lock()

    def stream(self, prompt_token_ids, params=None, request_id=None):
        with self.lock:
            rid = self.engine.add_request(list(prompt_token_ids), params, request_id)
            finished = False
            try:
                while not finished:
                    for u in self.engine.step():
                        if u.request_id == rid:
                            finished = u.finished
                            yield u
            finally:
                if not finished:
                    self.engine.abort(rid)
