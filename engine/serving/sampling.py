"""Sampling parameters (vLLM-like, validated to finite ranges) and the sampler that turns fp32 logits into token ids.

The slow reference of the sampler is the distribution it must follow (tests/test_sampling.py): softmax(logits / T),
then the k largest (and any tied with the k-th, as vLLM and transformers keep them) renormalised, then the
smallest top set holding top_p of their mass, renormalised.
"""
import math
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    """temperature 0 is greedy; top_k 0 and top_p 1 disable those filters; `seed` makes one request reproducible."""
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 0
    max_tokens: int = 1024
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    constraint: object = field(default=None, repr=False, compare=False)  # grammar.Constraint: masks, accepts


    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [s for s in (self.stop or []) if s]
        check_ranges(self)
        if self.temperature < GREEDY_BELOW:  # as vLLM: the limit of a vanishing temperature is greedy
            self.temperature = 0.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# --- validation: every value finite and representable (one request's settings must never break a step) -------
GREEDY_BELOW = 1e-5  # temperatures below this sample greedily (dividing by them overflows fp32 logits)
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)  # what torch.Generator.manual_seed accepts


def check_ranges(p: "SamplingParams") -> None:
    """Raise ValueError naming the first out-of-range field; numbers must be real, finite and not bool."""
    _real(p, "temperature", 0.0, math.inf)
    _real(p, "top_p", 0.0, 1.0)
    if p.top_p <= 0:
        raise ValueError(f"top_p must be in (0, 1], got {p.top_p}")
    _whole(p, "top_k", 0, math.inf)
    _whole(p, "max_tokens", 1, math.inf)
    if p.seed is not None:
        _whole(p, "seed", *SEED_RANGE)
    if not isinstance(p.stop_token_ids, (list, tuple)) or not all(_is_int(t) and t >= 0 for t in p.stop_token_ids):
        raise ValueError(f"stop_token_ids must be a list of token ids >= 0, got {p.stop_token_ids!r}")


def _real(p, name: str, low: float, high: float) -> None:
    value = getattr(p, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")


def _whole(p, name: str, low: float, high: float) -> None:
    value = getattr(p, name)
    if not _is_int(value) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def make_generator(params: SamplingParams, device) -> torch.Generator | None:
    if params.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(params.seed)


def sample(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None],
           vocab_limit: int | None = None) -> list[int | None]:
    """logits [B, V] fp32 -> one token id per row. Ids >= vocab_limit (padding rows of the head) never come out.
    A row no token can be drawn from (NaN, +inf, or every logit -inf) gives None: that request fails alone."""
    if vocab_limit is not None and vocab_limit < logits.shape[-1]:
        logits = logits[:, :vocab_limit]
    greedy, bad = _greedy_and_bad(logits)  # one host sync for the batch
    return [None if bad[i] else greedy[i] if p.greedy else _draw(row, p, g)
            for i, (row, p, g) in enumerate(zip(logits, params, generators))]


def _greedy_and_bad(logits: torch.Tensor) -> tuple[list[int], list[bool]]:
    """Each row's argmax, and whether the row is unusable (NaN or +inf anywhere, or no finite logit)."""
    bad = torch.isnan(logits).any(-1) | torch.isposinf(logits).any(-1) | torch.isneginf(logits).all(-1)
    greedy, bad = torch.stack([logits.argmax(-1), bad.long()]).tolist()
    return greedy, [bool(b) for b in bad]


def _draw(row: torch.Tensor, p: SamplingParams, g: torch.Generator | None) -> int:
    """One token from a usable row of logits with temperature, top-k and top-p. Scaled from the row's maximum,
    the logits stay in [-inf, 0] at any temperature: the top token keeps weight 1, so no filter empties the row."""
    probs = torch.softmax((row - row.max()) / p.temperature, dim=-1)
    if p.top_k:
        kth = probs.topk(min(p.top_k, probs.numel())).values[-1]
        probs = torch.where(probs >= kth, probs, 0)
        probs = probs / probs.sum()  # top-p then counts mass within the top k (as vLLM and transformers do)
    if p.top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < p.top_p
        keep[0] = True  # the top token is always in the nucleus (a top_p below fp32's range compares as 0)
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p * keep)
    return int(torch.multinomial(probs, 1, generator=g))
