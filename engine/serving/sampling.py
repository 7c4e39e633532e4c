"""Sampling parameters (vLLM-like) and the sampler that turns fp32 logits into token ids."""
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
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def make_generator(params: SamplingParams, device) -> torch.Generator | None:
    if params.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(params.seed)


def sample(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None],
           vocab_limit: int | None = None) -> list[int]:
    """logits [B, V] fp32 -> one token id per row. Ids >= vocab_limit (padding rows of the head) never come out."""
    if vocab_limit is not None and vocab_limit < logits.shape[-1]:
        logits = logits[:, :vocab_limit]
    greedy = logits.argmax(-1).tolist() if any(p.greedy for p in params) else None  # one sync for the batch
    return [greedy[i] if p.greedy else _draw(row, p, g) for i, (row, p, g) in enumerate(zip(logits, params, generators))]


def _draw(row: torch.Tensor, p: SamplingParams, g: torch.Generator | None) -> int:
    """One token from a row of logits with temperature, top-k and top-p."""
    probs = torch.softmax(row / p.temperature, dim=-1)
    if p.top_k:
        kth = probs.topk(min(p.top_k, probs.numel())).values[-1]
        probs = torch.where(probs >= kth, probs, 0)
    if p.top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < p.top_p
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p * keep)
    return int(torch.multinomial(probs, 1, generator=g))
