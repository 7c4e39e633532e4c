"""Constrained decoding with xgrammar: compile an output structure for our tokenizer, keep one matcher per request,
mask the logits of a step before sampling.

    grammars = Grammars(tokenizer, vocab_size)                     # once per engine (xgrammar's compile cache)
    constraint = grammars.constraint(output_format.structural_tag(...))   # per request: SamplingParams(constraint=)
    apply_constraints(logits, [p.constraint for p in params])      # the engine, before `sample`
    constraint.accept(token)                                       # every output token, sampled or forced

The bitmask is filled on the host by xgrammar (which needs no device) and copied to the logits' device without
waiting; masking runs there (xgrammar's Triton kernel on CUDA, its C++ loop on CPU). The only host sync of a step
stays the sampled ids. `apply_mask_reference` is the slow, obvious version the tests compare against.
"""
import torch
import xgrammar as xgr


class GrammarError(ValueError):
    """The structure cannot be compiled (e.g. a JSON schema xgrammar does not support)."""


class Grammars:
    """xgrammar's compiler for one tokenizer and model vocabulary (the mask is `vocab_size` wide)."""

    def __init__(self, tokenizer, vocab_size: int, max_threads: int = 2):
        info = xgr.TokenizerInfo.from_huggingface(tokenizer.hf, vocab_size=vocab_size,
                                                  stop_token_ids=sorted(tokenizer.eos_token_ids))
        self.vocab_size = vocab_size
        self._compiler = xgr.GrammarCompiler(info, max_threads=max_threads)

    def compile(self, structural_tag: dict):
        """The compiled grammar of a structural tag (cached by xgrammar); GrammarError when it cannot be built."""
        try:
            return self._compiler.compile_structural_tag(structural_tag)
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError/pydantic errors for bad schemas
            raise GrammarError(f"the grammar cannot be built: {exc}") from None

    def constraint(self, structural_tag: dict) -> "Constraint":
        """A fresh per-request constraint for a structural tag."""
        return Constraint(self.compile(structural_tag))


class Constraint:
    """One request's grammar state. Tokens the grammar rejects (e.g. forced ones) end the constraint: the request
    then goes on unconstrained and `failed` says so."""

    def __init__(self, compiled):
        self.matcher = xgr.GrammarMatcher(compiled)
        self.failed = False

    @property
    def active(self) -> bool:
        return not self.failed and not self.matcher.is_terminated()

    @property
    def completed(self) -> bool:
        """Whether the output so far is a complete match (the grammar allows only the end now)."""
        return self.matcher.is_completed()

    def fill(self, bitmask: torch.Tensor, row: int) -> bool:
        """Write the allowed next tokens into bitmask[row]; False when every token is allowed."""
        return self.matcher.fill_next_token_bitmask(bitmask, row)

    def accept(self, token_id: int) -> None:
        """Advance over one output token."""
        if self.active and not self.matcher.accept_token(token_id):
            self.failed = True


def apply_constraints(logits: torch.Tensor, constraints: list) -> None:
    """Mask logits [B, V] in place: row i keeps only what constraints[i] allows (None or inactive: untouched)."""
    rows = [i for i, c in enumerate(constraints) if c is not None and c.active]
    if not rows:
        return
    bitmask = xgr.allocate_token_bitmask(logits.shape[0], logits.shape[-1])
    rows = [i for i in rows if constraints[i].fill(bitmask, i)]
    if not rows:
        return
    if logits.device.type != "cpu":
        bitmask = bitmask.pin_memory().to(logits.device, non_blocking=True)
    xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=logits.shape[-1], indices=rows)


def apply_mask_reference(logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """Slow reference: unpack each bit (token j of row i is allowed iff bit j%32 of word j//32 is set)."""
    vocab = logits.shape[-1]
    for i in rows:
        for j in range(vocab):
            if not (int(bitmask[i, j // 32]) >> (j % 32)) & 1:
                logits[i, j] = float("-inf")
