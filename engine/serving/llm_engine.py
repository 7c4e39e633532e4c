"""`LLMEngine`: continuous batching over the model — add requests, `step()`, read updates; sessions reuse state.

One step = scheduler picks decodes + prefill chunks -> kept state is restored into newly admitted sequences ->
one packed forward -> sample -> text deltas with stop strings held back -> finished requests keep their state.
"""
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from .block_manager import CacheManager
from ..runtime.cache import ModelCache
from ..model.config import ModelConfig
from ..model.memory_plan import GRAPH_RESERVE, plan_memory
from ..model.prefill_chunk import PREFILL_CHUNK_TOKENS
from kernels.moe.gemv import MAX_TOKENS as GRAPH_MAX_BATCH
from .outputs import RequestUpdate
from ..runtime.parallel import ParallelRunner, WorkerPool
from ..runtime.graphs import graph_buckets
from ..model.quant import check_quantization, stored_quantization
from .request import Request
from ..runtime.runner import StepItem
from .sampling import SamplingParams, make_generator, sample
from .scheduler import LENGTH_EXCEEDED, Scheduler
from .sequence import Sequence, SequenceStatus
from .shared_states import SharedStates, checkpoint_fingerprint
from . import disk_states
from .snapshots import SnapshotKeeper
from .state_cache import KEY_BLOCK_TOKENS
from ..text.tokenizer import load_tokenizer
from .tp_snapshots import ShardedSnapshotKeeper
from ..runtime.worker import ShardSpec, check_tp, local_config

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
BLOCK_SIZE = 256
CPU_DEFAULT_CONTEXT = 65_536
GRAPH_PROBE_TIMEOUT_S = 60.0
KEEP_NEAR_END = 16  # a caller keep point this close to the prompt's end replaces the default one (one forward less)


@dataclass
class EngineArgs:
    """Serving limits; None means "derive from the device" (CPU: modest fixed sizes; CUDA: from free memory)."""
    max_model_len: int | None = None
    max_num_seqs: int = 32
    max_num_batched_tokens: int = PREFILL_CHUNK_TOKENS
    prefill_chunk_size: int = PREFILL_CHUNK_TOKENS  # tokens of one prompt per step: why, in model/prefill_chunk.py
    kv_cache_tokens: int | None = None
    gpu_memory_utilization: float = 0.9
    enable_state_reuse: bool = True
    device_state_bytes: int | None = None
    host_state_bytes: int = 8 << 30
    disk_state_bytes: int = 0
    disk_state_dir: str | None = None
    shared_state_dir: str | None = None  # storage every replica reads: sessions that move restore from it
    shared_state_bytes: int = 0  # its byte budget (0: unlimited)
    kernel_impl: str | None = None    # None: Triton on CUDA, PyTorch on CPU; "triton" on CPU runs the interpreter
    attention_impl: str | None = None  # None: as kernel_impl; "sdpa": softmax layers on SDPA (reference; eager)
    enforce_eager: bool = False       # True: no CUDA graphs for decode (vLLM's name)


def resolve_dtype(dtype, device: torch.device, cfg: ModelConfig) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float32 if device.type == "cpu" else DTYPES.get(cfg.torch_dtype, torch.bfloat16)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} or a torch.dtype, got {dtype!r}")
    return DTYPES[dtype]


class LLMEngine:
    """`tensor_parallel_size=N` runs ranks 1..N-1 in worker processes (one per GPU; gloo ranks on CPU) that this
    engine drives; `quantization="experts_int8"` keeps the experts int8 (also chosen by an int8 checkpoint)."""

    def __init__(self, model: str, *, device=None, dtype=None, args: EngineArgs | None = None, progress=None,
                 tensor_parallel_size: int = 1, quantization: str | None = None):
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model path {model!r} is not a directory (expected a checkpoint with config.json)")
        self.args = args = args or EngineArgs()
        self.model_dir = str(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.config = cfg = ModelConfig.from_dir(model)
        self.dtype = resolve_dtype(dtype, self.device, cfg)
        self.tokenizer = load_tokenizer(model)
        default_len = CPU_DEFAULT_CONTEXT if self.device.type == "cpu" else 1 << 20
        self.max_model_len = args.max_model_len or min(cfg.max_position_embeddings, default_len)
        self.tp_size = tensor_parallel_size
        check_tp(cfg, tensor_parallel_size)
        planned = check_quantization(quantization, stored_quantization(cfg.raw))
        if self.device.type == "cuda":
            self.memory_plan = plan_memory(cfg, tensor_parallel_size, planned, self.dtype,
                                           torch.cuda.mem_get_info(self.device)[1], args.gpu_memory_utilization,
                                           self.max_model_len, args.max_num_seqs, self._graphs_wanted(),
                                           args.prefill_chunk_size)
            print(self.memory_plan.describe())
            self.memory_plan.check()
        self.workers = WorkerPool(ShardSpec(self.model_dir, self.dtype, str(self.device), quantization,
                                            args.kernel_impl, args.attention_impl), tensor_parallel_size, progress)
        local = self.workers.local
        self.model, self.quantization = local.model, local.quantization
        self.load_stats = local.load_stats
        num_blocks = self._num_kv_blocks()
        self.workers.call("make_cache", args.max_num_seqs, num_blocks, BLOCK_SIZE, self.max_model_len)
        self.cache = local.cache
        self.runner = local.runner if tensor_parallel_size == 1 else ParallelRunner(self.workers)
        self.graph_stats = self._capture_graphs() if self._graphs_wanted() else None
        self.num_kv_blocks = num_blocks
        self._build_bookkeeping()
        self.close_think_ids = self.tokenizer.encode("\n</think>\n")

    def _build_bookkeeping(self) -> None:
        """Block/slot tables, snapshot index and scheduler (no model tensors): built at start and by `reset()`."""
        args, num_blocks = self.args, self.num_kv_blocks
        self.cache_manager = CacheManager(num_blocks, BLOCK_SIZE, args.max_num_seqs)
        self.keeper = None
        if args.enable_state_reuse:
            device_bytes = args.device_state_bytes
            if device_bytes is None:
                device_bytes = max(num_blocks * BLOCK_SIZE * self.cache.token_bytes // 4, 64 * self.cache.slot_bytes)
            keeper_args = (self.cache, self.cache_manager.blocks, device_bytes, args.host_state_bytes,
                           args.disk_state_bytes, args.disk_state_dir)
            shared = self._shared_states()
            self.keeper = SnapshotKeeper(*keeper_args, shared=shared) if self.tp_size == 1 \
                else ShardedSnapshotKeeper(self.workers, *keeper_args, shared=shared)
        self.states_restored, self.states_refused = self._adopt_disk_states()
        self.scheduler = Scheduler(args.max_num_seqs, max(args.max_num_batched_tokens, args.max_num_seqs),
                                   args.prefill_chunk_size, self.cache_manager, self.tokenizer.eos_token_ids,
                                   restore=self.keeper.restorable if self.keeper else None,
                                   on_release=self._on_release,
                                   reclaim=self.keeper.reclaim if self.keeper else None)
        self.requests: dict[str, Request] = {}
        self._unusable: set[str] = set()  # requests whose logits failed this step: nothing of theirs is kept

    def reset(self) -> list[str]:
        """Drop every request and kept snapshot and rebuild the bookkeeping; the weights and cache tensors stay.
        The recovery when a failed step may have left the tables inconsistent. Returns the dropped request ids."""
        dropped = list(self.requests)
        if self.keeper:
            for entry in list(self.keeper.index.entries.values()):
                try:
                    self.keeper.index.discard(entry)  # frees tensor-parallel ranks' shards and files on disk
                except Exception:  # noqa: BLE001 - the tables are being rebuilt anyway
                    pass
        self._build_bookkeeping()
        return dropped

    def identity(self) -> dict:
        """What a saved state depends on: the checkpoint's contents, dtype, quantization, TP layout, KV block size."""
        return {"format": 1, "model": checkpoint_fingerprint(self.model_dir), "dtype": str(self.dtype),
                "quantization": str(self.quantization or "none"), "tensor_parallel_size": self.tp_size,
                "block_size": BLOCK_SIZE}

    def _shared_states(self) -> SharedStates | None:
        if not self.args.shared_state_dir:
            return None
        return SharedStates(self.args.shared_state_dir, self.identity(), KEY_BLOCK_TOKENS, self.args.shared_state_bytes)

    def close(self) -> None:
        """Save the kept states to the disk tier when it persists (args.disk_state_dir), then stop the
        tensor-parallel worker processes (nothing to do at size 1)."""
        if self._persists_states():
            disk_states.persist(self.keeper, self._state_identity())
        self.workers.close()

    def _persists_states(self) -> bool:
        """A disk tier in a directory of the caller's (kept across restarts); single-rank keepers only."""
        return (self.keeper is not None and self.tp_size == 1 and self.args.disk_state_bytes > 0
                and self.args.disk_state_dir is not None)

    def _state_identity(self) -> dict:
        return disk_states.model_identity(self.model_dir, self.dtype, self.tp_size, self.cache)

    def _adopt_disk_states(self) -> tuple[int, str | None]:
        """The disk tier's snapshots of an earlier run of this model and layout (others are refused)."""
        if not self._persists_states():
            return 0, None
        return disk_states.adopt(self.keeper, self._state_identity())
    def _graphs_wanted(self) -> bool:
        """Decode graphs: on CUDA unless enforce_eager, and only over graph-capturable kernels (not SDPA/torch)."""
        a = self.args
        return (self.device.type == "cuda" and not a.enforce_eager and a.kernel_impl != "torch"
                and a.attention_impl != "sdpa")

    def _capture_graphs(self) -> dict | None:
        """Every rank captures its decode graphs; under TP only after a timed probe of capturing an all-reduce.
        A failure leaves the engine eager, with a warning."""
        if self.tp_size > 1:
            errors = [e for e in self.workers.call_all("probe_graph_collective", GRAPH_PROBE_TIMEOUT_S) if e]
            if errors:
                print(f"warning: CUDA graphs off (capturing an all-reduce failed: {errors[0]}); decode runs eagerly")
                return None
        try:
            stats = self.workers.call_all("capture_graphs", GRAPH_MAX_BATCH)
        except Exception as e:  # noqa: BLE001 - any capture error: stay correct, eager
            why = (str(e).strip().splitlines() or [repr(e)])[-1]
            print(f"warning: CUDA graph capture failed ({why}); decode runs eagerly")
            self.workers.call_all("drop_graphs")
            return None
        worst = max(stats, key=lambda s: s["bytes"])
        print(f"decode CUDA graphs: buckets {worst['buckets']} captured in {worst['seconds']:.1f} s, "
              f"{worst['bytes'] / 2**20:.0f} MiB per GPU")
        if getattr(self, "memory_plan", None) is not None:
            self.memory_plan.graph_bytes = worst["bytes"]
        return worst

    def _num_kv_blocks(self) -> int:
        tokens = self.args.kv_cache_tokens
        if tokens is None and self.device.type == "cuda":
            free = min(self.workers.call_all("free_memory"))
            cfg = local_config(self.config, self.workers.tp)
            states = self.args.max_num_seqs * ModelCache.bytes_per_slot(cfg)
            graphs = GRAPH_RESERVE if self._graphs_wanted() else 0
            activations = self.memory_plan.activation_reserve  # one prefill chunk's working set (>= 2 GiB)
            budget = free * self.args.gpu_memory_utilization - states - activations - graphs
            tokens = int(budget // max(ModelCache.bytes_per_token(cfg, self.dtype), 1))
            if tokens < BLOCK_SIZE:
                raise MemoryError(f"no room for a KV cache on {self.device}: {free / 2**30:.1f} GiB free after weights")
        if tokens is None:  # CPU: room for two full-length sequences
            tokens = 2 * self.max_model_len
        return max(1, -(-min(tokens, 4 * self.max_model_len) // BLOCK_SIZE))

    # --- requests ---------------------------------------------------------------------------------------------
    def add_request(self, prompt_token_ids: list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, keep_at: list[int] = (), *, starts_in_reasoning: bool = False,
                    thinking_budget: int | None = None, forced_output: list[int] = ()) -> str:
        """Queue a request. `keep_at`: prompt positions whose state later turns will restore (the prompt minus
        its last token is always kept). `starts_in_reasoning`: the prompt opened the think block. When
        `thinking_budget` reasoning tokens are out, the engine writes the block's close itself and the answer follows.
        `forced_output`: the first output tokens, forced as if sampled (an EOS among them ends the request there)."""
        params = params or SamplingParams()
        n = len(prompt_token_ids)
        if n == 0:
            raise ValueError("the prompt is empty")
        if n >= self.max_model_len:
            raise ValueError(f"the prompt has {n} tokens; the context window is {self.max_model_len} tokens "
                             f"(over by {n - self.max_model_len + 1})")
        lo, hi = min(prompt_token_ids), max(prompt_token_ids)
        if lo < 0 or hi >= self.config.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is outside the model's vocabulary [0, {self.config.vocab_size})")
        if thinking_budget is not None and thinking_budget < 0:
            raise ValueError(f"thinking_budget must be >= 0, got {thinking_budget}")
        request_id = request_id or uuid.uuid4().hex
        limit = self.max_model_len - n
        if params.max_tokens > limit:
            params = SamplingParams(**{**vars(params), "max_tokens": limit})
        seq = Sequence(request_id, list(prompt_token_ids), params)
        near_end = any(n - KEEP_NEAR_END <= k < n for k in keep_at)  # the caller's point serves regenerate too
        keep_points = sorted({k for k in (*keep_at, *(() if near_end else (n - 1,))) if 0 < k < n})
        self.requests[request_id] = Request(seq, params, make_generator(params, self.device), self.tokenizer.stream(),
                                            self.tokenizer.eos_token_ids, keep_points, starts_in_reasoning,
                                            thinking_budget, self.close_think_ids)
        self._append_forced(self.requests[request_id], list(forced_output))
        self.scheduler.add(seq)
        return request_id

    def abort(self, request_id: str) -> None:
        """Stop a request now: its slot and blocks are free when this returns."""
        self.scheduler.abort(request_id)
        self.requests.pop(request_id, None)
        if self.keeper:
            self.keeper.forget(request_id)
            self.keeper.flush()

    def force_tokens(self, request_id: str, token_ids: list[int]) -> None:
        """Append tokens to a running generation as if sampled (e.g. `</think>` to end the reasoning now)."""
        req = self.requests.get(request_id)
        if req is not None and not req.seq.is_finished:
            self._append_forced(req, token_ids)

    def _append_forced(self, req: Request, token_ids: list[int]) -> None:
        for t in token_ids:
            req.seq.append_token(t)
            req.push(t)

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished

    # --- one step ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[RequestUpdate]:
        out = self.scheduler.schedule()
        updates = [self._finish_update(self.requests.pop(s.request_id)) for s in out.finished
                   if s.request_id in self.requests]
        if out.is_empty:
            return updates
        for seq in out.restored:
            self.keeper.restore_into(seq)
        sample_ids = {s.request_id for s in out.sample_seqs}
        scheduled = out.scheduled
        logits = self._forward(scheduled, sample_ids)
        rows = [i for i, (seq, _) in enumerate(scheduled) if seq.request_id in sample_ids]
        sampled_seqs = [scheduled[i][0] for i in rows]
        reqs = [self.requests[s.request_id] for s in sampled_seqs]
        tokens = sample(_constrained(logits[rows], reqs), [r.params for r in reqs], [r.generator for r in reqs],
                        vocab_limit=self.tokenizer.vocab_size) if rows else []
        unusable = {s.request_id for s, t in zip(sampled_seqs, tokens) if t is None}
        self._unusable |= unusable
        sampled = {s.request_id: (0 if t is None else t) for s, t in zip(sampled_seqs, tokens)}
        finished = {s.request_id for s in self.scheduler.postprocess(out, sampled)}
        updates += [self._fail_unusable(rid) for rid in unusable]
        for seq, n in scheduled:
            req = self.requests.get(seq.request_id)
            if req is None:
                continue
            if seq.request_id in sampled:
                updates.append(self._token_update(req, sampled[seq.request_id], seq.request_id in finished))
            else:
                updates.append(RequestUpdate(seq.request_id, prefill_done=seq.num_computed_tokens,
                                             prefill_total=seq.num_prompt_tokens))
        if self.keeper:
            self.keeper.flush()
        return updates

    def _forward(self, scheduled: list[tuple[Sequence, int]], sample_ids: set[str]) -> torch.Tensor | None:
        """Run the step; where a chunk crosses keep points, run it in parts and keep the state at each point.

        Keep points are prompt positions whose state follow-up turns will restore: by default the prompt minus its
        last token (regenerate; a restore must leave one token to run), plus any the caller named (e.g. the end of
        the chat template's generation prompt, before a forced `<think>`). Returns each item's last-token logits
        (rows of sequences not in `sample_ids` may hold anything); None when no sequence samples this step (a
        middle chunk of a long prompt: no LM head runs and nothing waits for the device)."""
        parts = []
        for seq, n in scheduled:
            start = seq.num_computed_tokens
            points = [k for k in self.requests[seq.request_id].keep_points if start <= k < start + n] \
                if self.keeper else []
            if points and points[0] == start:
                self.keeper.keep(seq, start)
            bounds = [start] + [k for k in points if k > start] + [start + n]
            parts.append(list(zip(bounds, bounds[1:])))
        logits = None
        for r in range(max(len(p) for p in parts)):
            idx = [i for i, p in enumerate(parts) if len(p) > r]
            for i in idx if r else ():
                self.keeper.keep(scheduled[i][0], parts[i][r][0])
            items = [StepItem(s.token_ids[a:b], a, s.state_slot, s.block_table)
                     for s, (a, b) in ((scheduled[i][0], parts[i][r]) for i in idx)]
            need = any(len(parts[i]) == r + 1 and scheduled[i][0].request_id in sample_ids for i in idx)
            out = self.runner.run(items, False, need)  # positional: wrappers of run pass *args on
            if out is None:
                continue
            if logits is None:
                logits = out if len(idx) == len(scheduled) else out.new_zeros(len(scheduled), out.shape[1])
            if logits is not out:
                logits[idx] = out
        return logits

    def _fail_unusable(self, rid: str) -> RequestUpdate:
        """End a request whose logits row had no drawable token (its placeholder token is never shown); its state
        is not kept (it may hold the NaNs). Runs after `postprocess`, where the scheduler allows an abort."""
        self.scheduler.abort(rid)
        if self.keeper:
            self.keeper.forget(rid)
        self._unusable.discard(rid)
        req = self.requests.pop(rid)
        update = req.finish((), "the model's output for this request had no valid token (NaN or infinite logits)")
        update.finish_reason = "error"
        return update

    def _on_release(self, seq: Sequence) -> None:
        if not self.keeper or seq.request_id in self._unusable:
            return
        if seq.num_computed_tokens > 0:
            self.keeper.keep(seq, seq.num_computed_tokens, on_device=seq.status is not SequenceStatus.WAITING)
        if seq.status is not SequenceStatus.WAITING:
            self.keeper.forget(seq.request_id)

    def _token_update(self, req: Request, token: int, finished: bool) -> RequestUpdate:
        forced = req.push(token)
        if forced and not finished:
            self._append_forced(req, forced)
        rid = req.seq.request_id
        if (req.stop_hit or req.eos_seen) and not finished:
            self.scheduler.abort(rid)
            finished = True
        if finished:
            return self._finish_update(self.requests.pop(rid), [token])
        update = req.delta()
        update.token_ids = [token]
        return update

    def _finish_update(self, req: Request, tokens=()) -> RequestUpdate:
        seq, error = req.seq, None
        if seq.finish_reason == LENGTH_EXCEEDED:
            error = f"the request needs {seq.num_tokens} tokens of KV cache; the cache holds " \
                    f"{self.cache_manager.num_blocks * BLOCK_SIZE}"
        return req.finish(tokens, error)

    def state_stats(self) -> dict:
        return self.keeper.index.stats() if self.keeper else {}


def _constrained(logits: torch.Tensor, reqs: list[Request]) -> torch.Tensor:
    """Apply the grammar masks of the requests that have one (engine.serving.grammar)."""
    constraints = [r.params.constraint for r in reqs]
    if any(c is not None for c in constraints):
        from .grammar import apply_constraints  # xgrammar only loads for constrained requests
        apply_constraints(logits, constraints)
    return logits
