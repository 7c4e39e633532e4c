"""What the engine reports about a request after each step (shared by `LLM`, `AsyncEngine` and the studio)."""
from dataclasses import dataclass, field


@dataclass
class RequestUpdate:
    """New tokens/text of one request in one step, prefill progress, and on the last update the final stats."""
    request_id: str
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    prefill_done: int = 0
    prefill_total: int = 0
    finished: bool = False
    finish_reason: str | None = None
    stats: dict | None = None
    error: str | None = None
    cached_tokens: int | None = None  # prompt tokens restored from a saved state, once the first token came
