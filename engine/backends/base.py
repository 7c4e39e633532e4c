"""What every backend offers the studio and API: `stream` (RequestUpdates as tokens arrive) and `generate`.

Prompts are token ids made by OUR tokenizer and chat format, and text deltas come from our incremental decoder, so
the reasoning splitter, sessions and API behave the same whatever runs the model. State reuse exists only on our
engine (`supports_state_reuse`); the UI reads that flag.
"""
import importlib.metadata
import time
import uuid
from typing import Iterable, Iterator

from ..llm import CompletionOutput, RequestOutput
from ..serving.outputs import RequestUpdate
from ..serving.sampling import SamplingParams


class BackendNotInstalled(ImportError):
    """An optional backend whose packages are missing; the message says what to pip install."""


def require(module: str, pip_spec: str, backend: str):
    """Import `module` or raise BackendNotInstalled naming the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendNotInstalled(f"the {backend} backend is not installed: pip install {pip_spec} "
                                  "(or pip install -r requirements-backends.txt)") from None


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class Backend:
    """Shared plumbing: token stream -> RequestUpdates (text deltas, stop strings, EOS, final stats)."""
    name = "base"
    supports_state_reuse = False

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def tokens(self, prompt_token_ids: list[int], params: SamplingParams, request_id: str) -> Iterable[int]:
        """The backend's generated token ids, one at a time; closing the iterator must stop the generation."""
        raise NotImplementedError

    def stream(self, prompt_token_ids: list[int], params: SamplingParams | None = None,
               request_id: str | None = None) -> Iterator[RequestUpdate]:
        params = params or SamplingParams()
        rid = request_id or uuid.uuid4().hex
        decoder, text, sent, n, t0, first = self.tokenizer.stream(), "", 0, 0, time.perf_counter(), None
        reason = "length"
        source = iter(self.tokens(list(prompt_token_ids), params, rid))
        try:
            for token in source:
                first = first or time.perf_counter()
                n += 1
                if token in self.tokenizer.eos_token_ids and not params.ignore_eos:
                    reason = "stop"
                    break
                text += decoder.push(token)
                cut = min((i for i in (text.find(s, max(0, sent - len(s))) for s in params.stop) if i >= 0), default=-1)
                if cut >= 0:
                    text, reason = text[:cut], "stop"
                    break
                hold = max((len(s) - 1 for s in params.stop), default=0)
                upto = max(sent, len(text) - hold)
                yield RequestUpdate(rid, [token], text[sent:upto], len(prompt_token_ids), len(prompt_token_ids))
                sent = upto
                if n >= params.max_tokens:
                    break
        finally:
            close = getattr(source, "close", None)
            if close:
                close()
        if reason != "stop":
            text += decoder.flush()
        now = time.perf_counter()
        stats = {"ttft": (first or now) - t0, "seconds": now - t0, "prompt_tokens": len(prompt_token_ids),
                 "cached_tokens": 0, "completion_tokens": n, "backend": self.name}
        yield RequestUpdate(rid, [], text[sent:], len(prompt_token_ids), len(prompt_token_ids), True, reason, stats)

    def generate(self, prompt_token_ids: list[list[int]], params: SamplingParams | None = None) -> list[RequestOutput]:
        """One RequestOutput per prompt (run one after another)."""
        results = []
        for ids in prompt_token_ids:
            out = CompletionOutput([], "")
            for u in self.stream(ids, params):
                out.token_ids += u.token_ids
                out.text += u.text
                if u.finished:
                    out.finish_reason = u.finish_reason
            results.append(RequestOutput(list(ids), [out]))
        return results
