"""One request's output side: text deltas (stop strings held back), reasoning accounting, the thinking budget,
and its final stats. Tensors and scheduling live elsewhere; this is what a step reports about a request."""
import time

from .outputs import RequestUpdate
from ..text.reasoning import ReasoningSplitter
from .sampling import SamplingParams
from .sequence import Sequence


class Request:
    def __init__(self, seq: Sequence, params: SamplingParams, generator, decoder, eos_ids: set[int],
                 keep_points: list[int], starts_in_reasoning: bool = False, thinking_budget: int | None = None,
                 close_ids: list[int] = ()):
        self.seq, self.params, self.generator, self.decoder = seq, params, generator, decoder
        self.eos_ids = set() if params.ignore_eos else set(eos_ids)
        self.keep_points = keep_points
        self.splitter = ReasoningSplitter(starts_in_reasoning)
        self.thinking_budget, self.close_ids = thinking_budget, list(close_ids)
        self.arrival = time.perf_counter()
        self.text, self.sent = "", 0
        self.first_token_time: float | None = None
        self.cached_tokens = self.num_tokens = self.reasoning_tokens = 0
        self.stop_hit = self.budget_closed = self.eos_seen = False

    def push(self, token: int) -> list[int]:
        """Account for one new output token. Returns tokens to force next (the think block's close) when this
        token used up the thinking budget."""
        if self.stop_hit or self.eos_seen:  # nothing after the end counts (a forced EOS, then the sampled token)
            return []
        if self.params.constraint is not None:
            self.params.constraint.accept(token)
        if self.first_token_time is None:
            self.first_token_time = time.perf_counter()
            self.cached_tokens = self.seq.num_cached_tokens
        self.num_tokens += 1
        piece = "" if token in self.eos_ids else self.decoder.push(token)
        self.eos_seen = token in self.eos_ids  # sampled: the scheduler ends it too; forced: the engine ends it
        self.splitter.feed(piece)
        if self.splitter.in_reasoning:  # the think block comes first: every token so far belongs to it
            self.reasoning_tokens = self.num_tokens
        self.text += piece
        for stop in self.params.stop:
            at = self.text.find(stop, max(0, self.sent - len(stop)))
            if at != -1:
                self.text, self.stop_hit = self.text[:at], True
        budget = self.thinking_budget
        if budget is not None and not self.budget_closed and self.splitter.in_reasoning and self.reasoning_tokens >= budget:
            self.budget_closed = True
            return self.close_ids
        return []

    def delta(self) -> RequestUpdate:
        """The text that is safe to show now (a possible start of a stop string is held back)."""
        hold = max((len(s) - 1 for s in self.params.stop), default=0)
        upto = max(self.sent, len(self.text) - hold)
        text, self.sent = self.text[self.sent:upto], upto
        n = self.seq.num_prompt_tokens
        cached = self.cached_tokens if self.first_token_time is not None else None
        return RequestUpdate(self.seq.request_id, [], text, n, n, cached_tokens=cached)

    def finish(self, tokens=(), error: str | None = None) -> RequestUpdate:
        """The last update: remaining text and the stats of the whole request."""
        if not self.stop_hit:
            self.text += self.decoder.flush()
        seq, now = self.seq, time.perf_counter()
        first = self.first_token_time or now
        n_out = seq.num_completion_tokens
        stats = {"ttft": first - self.arrival, "seconds": now - self.arrival,
                 "tokens_per_s": (n_out - 1) / (now - first) if n_out > 1 and now > first else 0.0,
                 "prompt_tokens": seq.num_prompt_tokens, "cached_tokens": self.cached_tokens,
                 "completion_tokens": n_out, "reasoning_tokens": self.reasoning_tokens}
        reason = "stop" if self.stop_hit or self.eos_seen else seq.finish_reason
        return RequestUpdate(seq.request_id, list(tokens), self.text[self.sent:], seq.num_prompt_tokens,
                             seq.num_prompt_tokens, True, reason, stats, error)
