"""Continuous batching with chunked prefill and recompute preemption (plain Python, no torch).

One engine step, single-threaded:

    out = scheduler.schedule()
    sampled = runner.run(out) if not out.is_empty else {}     # {request_id: token_id} for out.sample_seqs
    finished = scheduler.postprocess(out, sampled)

Contract with the runner:
- `schedule()` never changes `num_computed_tokens` of a scheduled sequence: each `(seq, n)` in `out.scheduled` means
  "run tokens `seq.token_ids[seq.num_computed_tokens : seq.num_computed_tokens + n]`". Their KV blocks are already
  in `seq.block_table` and the lightning state is in `seq.state_slot`. `postprocess` advances the counter.
- The runner samples one token for each of `out.sample_seqs` (those whose run reaches `seq.num_tokens`).
- Restore: when a waiting sequence is admitted, the scheduler calls `restore(seq) -> int` (default 0). It must be a
  pure query (no side effects; it may be called again if admission has to wait) returning how many leading tokens of
  `seq.token_ids` the runner can restore, in `[0, num_tokens - 1]`. The scheduler sets `num_computed_tokens` and
  `num_cached_tokens` to it, allocates blocks for the restored tokens plus the first chunk, and lists the sequence in
  `out.restored`: before the forward pass the runner copies the snapshot covering `token_ids[:num_cached_tokens]`
  into `seq.state_slot` and the first `ceil(num_cached_tokens / block_size)` blocks of `seq.block_table`.
- `on_release(seq)` (optional) runs right before a sequence's slot and blocks are freed, while `num_computed_tokens`
  still counts what they hold; `seq.status` says why: FINISHED, ABORTED, or WAITING (preempted). The runner may
  snapshot state there (freed blocks are not reused before the next `schedule()`).
- Prefill chunks never cross `num_prompt_tokens`, so the state right after the prompt ("before the answer") is
  in the slot after the step whose chunk ends exactly there (`num_computed_tokens + n == num_prompt_tokens`).
- `reclaim(num_blocks) -> int` (optional) is asked to free KV blocks held outside running sequences (e.g. snapshots
  that share blocks) before the scheduler preempts, gives up on a sequence, or admits with a short first chunk; it
  returns how many blocks it freed. It may demote or drop any unpinned snapshot: `restore` is asked again after a
  reclaim, and reclaim is not called once a sequence has been admitted with a restore in the same `schedule()`.
- `abort()` and `add()` are called between steps, never between `schedule()` and `postprocess()`.
"""
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .block_manager import CacheManager, blocks_for
from .sequence import Sequence, SequenceStatus

LENGTH_EXCEEDED = "length_exceeded"


@dataclass(slots=True)
class SchedulerOutput:
    """What to run this step. `decodes` run 1 token each; `prefills` run `n` tokens from `seq.num_computed_tokens`.

    A decode is any running sequence with exactly one uncomputed token: usually its last sampled token, sometimes
    the last token of a chunked prompt; the runner treats both alike. A prefill may also have `n == 1`.

    `restored`: admitted this step with `num_cached_tokens` restored (copy the snapshot in first).
    `preempted` / `finished`: sequences the scheduler itself took off or ended this step (no work to run for them).
    """
    decodes: list[Sequence] = field(default_factory=list)
    prefills: list[tuple[Sequence, int]] = field(default_factory=list)
    restored: list[Sequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    finished: list[Sequence] = field(default_factory=list)

    @property
    def scheduled(self) -> list[tuple[Sequence, int]]:
        return [(seq, 1) for seq in self.decodes] + self.prefills

    @property
    def num_batched_tokens(self) -> int:
        return len(self.decodes) + sum(n for _, n in self.prefills)

    @property
    def is_empty(self) -> bool:
        return not self.decodes and not self.prefills

    @property
    def sample_seqs(self) -> list[Sequence]:
        """Sequences that need a sampled token after this step (valid until `postprocess`)."""
        return [seq for seq, n in self.scheduled if seq.num_computed_tokens + n == seq.num_tokens]


class Scheduler:
    """Waiting/running queues over one `CacheManager`.

    Each step: all running decodes first (one token each), then prefill chunks of at most `prefill_chunk_size`
    tokens (running chunked prefills oldest first, then admissions from the front of `waiting`) until
    `max_num_batched_tokens` is used. When blocks run out, the newest running sequence is preempted: its slot and
    blocks are freed, `num_computed_tokens` resets to 0 and it goes to the front of `waiting`.
    A sequence that cannot fit even alone finishes with `finish_reason == "length_exceeded"`.
    """

    def __init__(self, max_num_seqs: int, max_num_batched_tokens: int, prefill_chunk_size: int,
                 cache: CacheManager, eos_token_ids: Iterable[int] = (),
                 restore: Callable[[Sequence], int] | None = None,
                 on_release: Callable[[Sequence], None] | None = None,
                 reclaim: Callable[[int], int] | None = None):
        for name, value in [("max_num_seqs", max_num_seqs), ("max_num_batched_tokens", max_num_batched_tokens),
                            ("prefill_chunk_size", prefill_chunk_size)]:
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if max_num_batched_tokens < max_num_seqs:
            raise ValueError(f"max_num_batched_tokens ({max_num_batched_tokens}) must be >= max_num_seqs "
                             f"({max_num_seqs}) so every running sequence can decode each step")
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.prefill_chunk_size = prefill_chunk_size
        self.cache = cache
        self.eos_token_ids = frozenset(eos_token_ids)
        self.restore = restore
        self.on_release = on_release
        self.reclaim = reclaim
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.requests: dict[str, Sequence] = {}
        self.num_preemptions = 0

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queue a new WAITING sequence that holds no cache resources."""
        if seq.request_id in self.requests:
            raise ValueError(f"request id {seq.request_id!r} is already scheduled")
        if seq.status is not SequenceStatus.WAITING or seq.block_table or seq.state_slot is not None:
            raise ValueError(f"request {seq.request_id!r} must be WAITING and hold no blocks or slot: {seq}")
        self.requests[seq.request_id] = seq
        self.waiting.append(seq)

    def abort(self, request_id: str) -> Sequence | None:
        """End a waiting or running request now, freeing its slot and blocks; None if it is unknown or done."""
        seq = self.requests.get(request_id)
        if seq is not None:
            self._finish(seq, "abort", SequenceStatus.ABORTED)
        return seq

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        self._schedule_decodes(out)
        self._schedule_running_prefills(out)
        if not out.preempted:
            self._admit_waiting(out)
        return out

    def postprocess(self, output: SchedulerOutput, sampled: dict[str, int]) -> list[Sequence]:
        """Advance progress, append sampled tokens, finish on EOS/stop/max_tokens; return all finished this step."""
        finished = list(output.finished)
        for seq, n in output.scheduled:
            if seq.status is not SequenceStatus.RUNNING:
                continue
            seq.num_computed_tokens += n
            if seq.num_computed_tokens < seq.num_tokens:
                continue
            if seq.request_id not in sampled:
                raise ValueError(f"no sampled token for request {seq.request_id!r}, which completed its step")
            token = sampled[seq.request_id]
            seq.append_token(token)
            reason = self._stop_reason(seq, token)
            if reason is not None:
                self._finish(seq, reason)
                finished.append(seq)
        return finished

    def _stop_reason(self, seq: Sequence, token: int) -> str | None:
        params = seq.sampling_params
        if token in self.eos_token_ids and not getattr(params, "ignore_eos", False):
            return "stop"
        if token in (getattr(params, "stop_token_ids", None) or ()):
            return "stop"
        max_tokens = getattr(params, "max_tokens", None)
        if max_tokens is not None and seq.num_completion_tokens >= max_tokens:
            return "length"
        return None

    def _budget(self, out: SchedulerOutput) -> int:
        return self.max_num_batched_tokens - out.num_batched_tokens

    def _schedule_decodes(self, out: SchedulerOutput) -> None:
        for seq in list(self.running):
            if seq.status is not SequenceStatus.RUNNING or seq.num_uncomputed_tokens != 1:
                continue
            if self._make_room(seq, 1, out):
                self.cache.grow(seq, seq.num_tokens)
                out.decodes.append(seq)
            else:
                self._give_up_on(seq, out)

    def _schedule_running_prefills(self, out: SchedulerOutput) -> None:
        for seq in list(self.running):
            if seq.status is not SequenceStatus.RUNNING or seq.num_uncomputed_tokens <= 1:
                continue
            if self._budget(out) <= 0:
                return
            want = min(self._chunk(seq, seq.num_computed_tokens), self._budget(out))
            self._reclaim(blocks_for(seq.num_computed_tokens + want, self.cache.block_size) - len(seq.block_table))
            if not self._make_room(seq, 1, out):
                self._give_up_on(seq, out)
                continue
            n = min(want, self.cache.blocks.max_tokens(seq) - seq.num_computed_tokens)
            self.cache.grow(seq, seq.num_computed_tokens + n)
            out.prefills.append((seq, n))

    def _admit_waiting(self, out: SchedulerOutput) -> None:
        while self.waiting and len(self.running) < self.max_num_seqs and self._budget(out) > 0:
            seq = self.waiting[0]
            if not self.cache.fits_at_all(seq.num_tokens):
                self._finish(seq, LENGTH_EXCEEDED)
                out.finished.append(seq)
                continue
            if self.cache.slots.num_free == 0:
                return
            restored = self._restored_len(seq)
            want = min(self._chunk(seq, restored), self._budget(out))
            if not out.restored and self._reclaim(blocks_for(restored + want, self.cache.block_size)):
                restored = self._restored_len(seq)
                want = min(self._chunk(seq, restored), self._budget(out))
            n = min(want, self.cache.blocks.num_free * self.cache.block_size - restored)
            if n < 1 or not self.cache.admit(seq, restored + n):
                return
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            seq.num_computed_tokens = seq.num_cached_tokens = restored
            self.running.append(seq)
            out.prefills.append((seq, n))
            if restored:
                out.restored.append(seq)

    def _chunk(self, seq: Sequence, start: int) -> int:
        """Largest prefill chunk from `start`: at most `prefill_chunk_size`, ending at the prompt end if before it."""
        end = seq.num_prompt_tokens if start < seq.num_prompt_tokens else seq.num_tokens
        return min(end - start, self.prefill_chunk_size)

    def _reclaim(self, num_blocks_wanted: int) -> bool:
        """Ask `reclaim` for the blocks missing beyond the free ones; True if it freed any."""
        missing = num_blocks_wanted - self.cache.blocks.num_free
        return missing > 0 and self.reclaim is not None and self.reclaim(missing) > 0

    def _restored_len(self, seq: Sequence) -> int:
        restored = self.restore(seq) if self.restore is not None else 0
        if not 0 <= restored < seq.num_tokens:
            raise ValueError(f"restore({seq.request_id!r}) returned {restored}; "
                             f"must be in [0, {seq.num_tokens - 1}] so one token is left to prefill")
        return restored

    def _make_room(self, seq: Sequence, num_new_tokens: int, out: SchedulerOutput) -> bool:
        """Preempt newer sequences until `seq` can take `num_new_tokens` more; False if `seq` is itself the newest."""
        while not self.cache.blocks.can_fit(seq, num_new_tokens):
            needed = blocks_for(seq.num_computed_tokens + num_new_tokens, self.cache.block_size)
            if self._reclaim(needed - len(seq.block_table)):
                continue
            victim = self.running[-1]
            if victim is seq:
                return False
            self._preempt(victim, out)
        return True

    def _give_up_on(self, seq: Sequence, out: SchedulerOutput) -> None:
        """`seq` is the newest and still does not fit: preempt it, or end it if it is alone (it never will fit)."""
        if len(self.running) == 1:
            self._finish(seq, LENGTH_EXCEEDED)
            out.finished.append(seq)
        else:
            self._preempt(seq, out)

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        seq.status = SequenceStatus.WAITING
        self._release(seq)
        seq.num_computed_tokens = 0
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
        out.preempted.append(seq)
        if seq in out.decodes:
            out.decodes.remove(seq)

    def _release(self, seq: Sequence) -> None:
        if self.on_release is not None:
            self.on_release(seq)
        self.cache.release(seq)

    def _finish(self, seq: Sequence, reason: str, status: SequenceStatus = SequenceStatus.FINISHED) -> None:
        was_running = seq.status is SequenceStatus.RUNNING
        seq.status, seq.finish_reason = status, reason
        if was_running:
            self.running.remove(seq)
            self._release(seq)
        else:
            self.waiting.remove(seq)
        del self.requests[seq.request_id]
