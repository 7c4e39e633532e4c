"""The only place where sequences become tensors: packs a step's sequences, runs the model, returns logits.

A step's inputs go into persistent device buffers (step_buffers.py) with one host-to-device copy. Decode steps on
CUDA replay a captured graph of their batch-size bucket (graphs.py; none under `enforce_eager`); `pad_decode`
(default on CUDA) runs the same padded buckets eagerly when no graph is there: on CPU it is the twin of the replay
bookkeeping that tests exercise.

A sequence with no past (`past_len == 0`) starts from a zero lightning state: the runner clears its slot, so under
tensor parallelism every rank clears its own shard without a separate call.

Overlap (`overlap=True`, the default): a step's inputs go up without a host sync (step_buffers.py) and `run`
returns once the step is queued, so while the GPU runs chunk i of a long prompt the host schedules and packs chunk
i+1; a prefill chunk that samples nothing asks for no logits (`need_logits=False`: no LM head, no gather). The
host stays at most MAX_STEPS_AHEAD steps ahead of the device: progress reported after a step is at most that far
ahead of the work done. `overlap=False` is the reference (pageable copy, torch waits for the stream every step)."""
from collections import deque
from dataclasses import dataclass

import torch

from .cache import ModelCache
from .graphs import DecodeGraphs, bucket_for, graph_buckets
from .step_buffers import StepBuffers
from ..model.prefill_chunk import PREFILL_CHUNK_TOKENS

MIN_PREFILL_TOKENS = PREFILL_CHUNK_TOKENS
MAX_STEPS_AHEAD = 1  # queued steps the host may run ahead of the device (one keeps the GPU busy between chunks)


@dataclass
class StepItem:
    """One sequence in a step: its new tokens, how many tokens it already has in cache, and where that cache is."""
    new_tokens: list[int]
    past_len: int
    slot: int
    block_table: list[int]


class ModelRunner:
    def __init__(self, model, cache: ModelCache, device, *, max_num_seqs: int = 32, max_model_len: int | None = None,
                 pad_decode: bool | None = None, overlap: bool = True):
        self.model, self.cache, self.device = model, cache, torch.device(device)
        cache.bind(model)
        bs = cache.block_size
        self.max_model_len = max_model_len or cache.num_blocks * bs
        self.buckets = graph_buckets(max_num_seqs)
        cap = self.buckets[-1]
        self.decode_bufs = StepBuffers(cap, cap, -(-self.max_model_len // bs), bs, cache.scratch_row,
                                       self.max_model_len, device)
        self.prefill_bufs: StepBuffers | None = None
        self.graphs: DecodeGraphs | None = None
        # CUDA: eager decode runs the graphs' padded buckets too, so enforce_eager gives the graphs' tokens exactly
        # (kernels split their reductions by batch size; padded eager == replay was measured bit for bit)
        self.pad_decode = self.device.type == "cuda" if pad_decode is None else pad_decode
        self.last_bucket: int | None = None  # the bucket the last decode step ran in (None: unpadded)
        self.overlap = overlap
        self._queued: deque = deque()  # CUDA events of the steps queued and maybe not run yet

    # --- graphs -------------------------------------------------------------------------------------------------
    def capture_graphs(self, max_bucket: int, only: list[int] | None = None) -> dict:
        """Capture one decode graph per bucket up to `max_bucket` (or the buckets `only`); {seconds, bytes, buckets}."""
        graphs = DecodeGraphs()
        buckets = [b for b in self.buckets if b <= max_bucket and (only is None or b in only)]
        with torch.inference_mode():
            stats = graphs.capture(buckets, lambda b: self.decode_bufs.fill([], pad_to=b), self._logits, self.device)
        self.graphs = graphs
        return stats

    def drop_graphs(self) -> None:
        self.graphs = None

    # --- a step -------------------------------------------------------------------------------------------------
    def _logits(self, ids: torch.Tensor, ctx) -> torch.Tensor:
        return self.model.lm_head.local_logits(self.model(ids, ctx))

    def _prefill_buffers(self, items) -> StepBuffers:
        if self.prefill_bufs is None or not self.prefill_bufs.fits(items):
            tokens, seqs, width = self.prefill_bufs.capacity if self.prefill_bufs else (MIN_PREFILL_TOKENS, 1, 1)
            need = (sum(len(it.new_tokens) for it in items), len(items), max(len(it.block_table) for it in items))
            tokens, seqs, width = (max(a, b) for a, b in zip((tokens, seqs, width), need))
            self.prefill_bufs = StepBuffers(tokens, seqs, width, self.cache.block_size, self.cache.scratch_row,
                                            self.max_model_len, self.device)
        return self.prefill_bufs

    def _run_local(self, items: list[StepItem], all_logits: bool, need_logits: bool) -> torch.Tensor | None:
        """This rank's logits slice: [N, V/ranks] (or [T, V/ranks] with all_logits; None without need_logits)."""
        decode = all(len(it.new_tokens) == 1 and it.past_len > 0 for it in items)
        self.last_bucket = None
        if decode and (self.graphs is not None or self.pad_decode):
            bucket = bucket_for(len(items), self.buckets)
            if bucket is not None and self.decode_bufs.fits(items, bucket):
                ids, ctx = self.decode_bufs.fill(items, pad_to=bucket, non_blocking=self.overlap)
                self.last_bucket = bucket
                if self.graphs is not None and bucket in self.graphs:
                    return self.graphs.replay(bucket)[:len(items)].clone()
                return self._logits(ids, ctx)[:len(items)]
        bufs = self.decode_bufs if decode and self.decode_bufs.fits(items) else self._prefill_buffers(items)
        ids, ctx = bufs.fill(items, non_blocking=self.overlap)
        hidden = self.model(ids, ctx)
        if not (need_logits or all_logits):
            return None
        if not all_logits and not ctx.is_decode:
            hidden = hidden[ctx.cu_seqlens[1:].long() - 1]
        return self.model.lm_head.local_logits(hidden)

    @torch.inference_mode()
    def run(self, items: list[StepItem], all_logits: bool = False, need_logits: bool = True) -> torch.Tensor | None:
        """Forward one step. Returns fp32 logits of each sequence's last token [N, V] (or of every token [T, V]);
        None on tensor-parallel ranks other than 0, and None when `need_logits` is False (except a padded decode
        step: its graph computes them anyway). Every rank must get the same arguments."""
        for it in items:
            if it.past_len == 0:
                self.cache.clear_slot(it.slot)
        local = self._run_local(items, all_logits, need_logits)
        logits = None if local is None else self.model.lm_head.gather(local)
        self._bound_run_ahead()
        return logits

    def _bound_run_ahead(self) -> None:
        """Mark this step queued; wait until at most MAX_STEPS_AHEAD queued steps may still be running."""
        if self.device.type != "cuda":
            return
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        self._queued.append(event)
        while len(self._queued) > MAX_STEPS_AHEAD:
            self._queued.popleft().synchronize()
