"""One request as the scheduler sees it: token ids, status, progress counters, KV block table and state slot.

Plain Python (no torch). Progress is a single counter, `num_computed_tokens`: the first that many of `token_ids`
have their lightning state and softmax KV in the cache. A step processes tokens
`[num_computed_tokens, num_computed_tokens + n)`; when that reaches `num_tokens` the model samples one more token.
"""
import time
from enum import Enum, auto

DEFAULT_BLOCK_SIZE = 256


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()
    ABORTED = auto()


class Sequence:
    """A request: prompt + generated tokens and the cache resources it holds.

    `sampling_params` is opaque here; the scheduler reads `.max_tokens` (None = no limit), `.ignore_eos` and the
    optional `.stop_token_ids`. `block_size` is set by the cache that admits the sequence (used by `num_blocks`).
    `num_cached_tokens` counts the tokens restored from a kept snapshot at the latest admission (for stats); only
    the scheduler writes it and `num_computed_tokens`.
    """

    def __init__(self, request_id: str, prompt_token_ids: list[int], sampling_params,
                 arrival_time: float | None = None):
        if not prompt_token_ids:
            raise ValueError(f"request {request_id!r}: prompt_token_ids is empty")
        self.request_id = request_id
        self.token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(self.token_ids)
        self.sampling_params = sampling_params
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0
        self.block_table: list[int] = []
        self.state_slot: int | None = None
        self.finish_reason: str | None = None
        self.arrival_time = time.monotonic() if arrival_time is None else arrival_time
        self.block_size = DEFAULT_BLOCK_SIZE

    def __repr__(self) -> str:
        return (f"Sequence({self.request_id!r}, {self.status.name}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, blocks={len(self.block_table)}, slot={self.state_slot})")

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_completion_tokens(self) -> int:
        return self.num_tokens - self.num_prompt_tokens

    @property
    def completion_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_uncomputed_tokens(self) -> int:
        """Tokens still to run through the model before the next token can be sampled."""
        return self.num_tokens - self.num_computed_tokens

    @property
    def num_blocks(self) -> int:
        """KV blocks needed to hold all `num_tokens` tokens at this sequence's `block_size`."""
        return -(-self.num_tokens // self.block_size)

    @property
    def last_token(self) -> int:
        return self.token_ids[-1]

    @property
    def is_finished(self) -> bool:
        return self.status in (SequenceStatus.FINISHED, SequenceStatus.ABORTED)

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
