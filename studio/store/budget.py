"""Token accounting of a prompt against the context window: system / documents (per file) / history / template /
reserved output. Counts come from the injected tokenizer function over the exact texts that will be sent."""
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_WINDOW = 1_000_000


class CountCache:
    """Memoises count_tokens(text) per counter, keyed by (counter, length, hash) so big texts are not kept alive."""

    def __init__(self, max_entries: int = 4096):
        self.max_entries = max_entries
        self._counts: OrderedDict[tuple, int] = OrderedDict()

    def count(self, count_tokens: Callable[[str], int], text: str) -> int:
        """count_tokens(text), from the cache when this counter has seen the same text."""
        if not text:
            return 0
        key = (count_tokens, len(text), hash(text))
        if key in self._counts:
            self._counts.move_to_end(key)
            return self._counts[key]
        value = self._counts[key] = count_tokens(text)
        if len(self._counts) > self.max_entries:
            self._counts.popitem(last=False)
        return value


def summarize(*, system: int, documents: list[dict], history: int, template: int, reserved_output: int,
              window: int = DEFAULT_WINDOW) -> dict:
    """Budget dict: each part's tokens, `total`, `remaining` (window - total), `fits` and `overflow` (tokens over).

    documents: [{"name", "tokens", "pending"}]; pending documents are uploaded but not sent yet (they will go
    with the next message), so the budget predicts the next request before it is sent.
    """
    if reserved_output < 0 or window <= 0:
        raise ValueError(f"reserved_output must be >= 0 and window > 0, got {reserved_output} and {window}")
    documents_total = sum(doc["tokens"] for doc in documents)
    total = system + documents_total + history + template + reserved_output
    return {"window": window, "system": system, "documents": documents, "documents_total": documents_total,
            "history": history, "template": template, "reserved_output": reserved_output, "total": total,
            "remaining": window - total, "fits": total <= window, "overflow": max(0, total - window)}
