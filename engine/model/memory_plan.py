"""What goes where before anything loads: weights per GPU, KV + state budget, concurrent full-length sessions.

Pure arithmetic from the ModelConfig (testable on CPU with the real M1 config). Mirrors how the engine shards:
heads / kv heads (replicated when fewer than ranks) / expert intermediate rows split N ways, vocabulary split with
padding, router gates and norms replicated, LM head in the model dtype when bf16 (fp32 otherwise), experts int8 +
fp32 row scales with `experts_int8`. Also the decode CUDA graphs' memory (reserved before capture, then the
measured figure) and the peak of a prefill of the window's length per GPU (weights + its KV and state + graphs + one
chunk's activations; bench/scale.py records it next to torch.cuda.max_memory_allocated of every GPU).
"""
from dataclasses import dataclass

import torch

from .config import ModelConfig
from .prefill_chunk import PREFILL_CHUNK_TOKENS

GB = 1e9
ACTIVATION_RESERVE = 2 << 30  # the least the engine keeps free for activations when sizing the KV cache
LONG_SESSION = 1 << 20        # "a 1M-token session"
GRAPH_RESERVE = 1 << 30       # kept free for the decode CUDA graphs' pool until capture measures it


class MemoryPlanError(MemoryError):
    """The model (or one full-length session) does not fit the GPUs; the message says what would."""


@dataclass
class MemoryPlan:
    tp_size: int
    quantization: str | None
    gpu_bytes: int
    usable_bytes: int
    weights: dict          # part -> bytes per GPU
    kv_bytes_per_token: int
    state_bytes_per_seq: int
    max_model_len: int
    max_num_seqs: int
    graph_bytes: int = 0       # decode CUDA graphs: GRAPH_RESERVE until measured at capture
    prefill_chunk: int = PREFILL_CHUNK_TOKENS
    activation_bytes_per_token: int = 0  # one prefill chunk's working set per token (the largest layer's)

    @property
    def weight_bytes(self) -> int:
        return sum(self.weights.values())

    @property
    def activation_reserve(self) -> int:
        """Bytes per GPU kept free for one prefill chunk's activations (at least ACTIVATION_RESERVE)."""
        return max(ACTIVATION_RESERVE, self.prefill_chunk * self.activation_bytes_per_token)

    @property
    def cache_budget(self) -> int:
        """Bytes per GPU left for KV cache and lightning states."""
        return self.usable_bytes - self.weight_bytes - self.activation_reserve - self.graph_bytes

    def prefill_parts(self, num_tokens: int | None = None) -> dict:
        """What one GPU holds at the peak of a `num_tokens` prefill (default: the window, max_model_len)."""
        n = self.max_model_len if num_tokens is None else num_tokens
        return {"weights": self.weight_bytes, "kv": n * self.kv_bytes_per_token, "states": self.state_bytes_per_seq,
                "graphs": self.graph_bytes, "activations": self.prefill_chunk * self.activation_bytes_per_token}

    def prefill_peak(self, num_tokens: int | None = None) -> int:
        """Peak bytes per GPU while prefilling one `num_tokens` prompt (default: the window): weights, its KV and
        state, graphs, and the activations of one chunk (an estimate; bench/scale.py measures it)."""
        return sum(self.prefill_parts(num_tokens).values())

    def sessions(self, num_tokens: int) -> int:
        """How many sequences of `num_tokens` tokens fit the cache budget at once (KV + one state slot each)."""
        per = self.state_bytes_per_seq + num_tokens * self.kv_bytes_per_token
        return max(0, self.cache_budget // per)

    def describe(self) -> str:
        parts = parts_text(self.weights)
        return "\n".join([
            f"memory plan: TP={self.tp_size}, quantization={self.quantization or 'none'}, "
            f"{self.gpu_bytes / GB:.1f} GB per GPU ({self.usable_bytes / GB:.1f} GB usable)",
            f"  weights per GPU: {self.weight_bytes / GB:.2f} GB ({parts})",
            f"  KV {self.kv_bytes_per_token / 1024:.1f} KiB/token/GPU, lightning state "
            f"{self.state_bytes_per_seq / 1e6:.1f} MB/sequence/GPU; budget {self.cache_budget / GB:.2f} GB/GPU",
            f"  concurrent sessions: {self.sessions(LONG_SESSION)} of 1M tokens, "
            f"{self.sessions(self.max_model_len)} of max_model_len={self.max_model_len}",
            f"  decode CUDA graphs {self.graph_bytes / GB:.2f} GB; prefill of the window ({self.max_model_len:,} "
            f"tokens): peak {self.prefill_peak() / GB:.1f} GB/GPU ({parts_text(self.prefill_parts())}; "
            f"{self.prefill_chunk}-token chunks)",
        ])

    def check(self) -> None:
        """Raise MemoryPlanError when the weights, or one max_model_len session, do not fit."""
        if self.cache_budget <= 0:
            raise MemoryPlanError(
                f"the model needs {self.weight_bytes / GB:.1f} GB of weights per GPU at tensor_parallel_size="
                f"{self.tp_size} (quantization={self.quantization}), but only "
                f"{(self.usable_bytes - self.activation_reserve) / GB:.1f} GB per GPU are usable: use more GPUs, "
                f"larger GPUs, or quantization='experts_int8'")
        if self.sessions(self.max_model_len) < 1:
            fits = self.cache_budget // self.kv_bytes_per_token if self.kv_bytes_per_token else 0
            raise MemoryPlanError(
                f"max_model_len={self.max_model_len} needs {self.max_model_len * self.kv_bytes_per_token / GB:.1f} GB "
                f"of KV per GPU but {self.cache_budget / GB:.2f} GB are left after weights: lower max_model_len "
                f"(about {fits} fits) or use more GPUs")


def parts_text(parts: dict) -> str:
    return ", ".join(f"{k} {v / GB:.2f}" for k, v in parts.items())


def _bytes(dtype) -> int:
    return torch.finfo(dtype).bits // 8 if dtype.is_floating_point else torch.iinfo(dtype).bits // 8


def weights_per_gpu(cfg: ModelConfig, tp: int, quantization: str | None, dtype=torch.bfloat16) -> dict:
    """Bytes of each part of the model held by one GPU (rank 0; all ranks are equal up to vocabulary padding)."""
    b = _bytes(dtype)
    H, I, E, D, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_experts, cfg.head_dim, cfg.num_layers
    inner = cfg.num_heads * D
    kv_local = max(1, cfg.num_kv_heads // tp) * D
    n_lin, n_soft = len(cfg.lightning_layers), len(cfg.softmax_layers)
    expert_params = L * E * 3 * H * I // tp
    experts = expert_params * (1 if quantization else b)
    if quantization:
        experts += L * E * (2 * I // tp + H) * 4
    lightning = n_lin * (5 * inner * H // tp + inner // tp) * b
    softmax = n_soft * (2 * inner * H // tp + 2 * kv_local * H) * b
    vocab_rows = -(-cfg.vocab_size // tp)
    head = b if dtype == torch.bfloat16 else 4
    return {"experts": experts, "attention": lightning + softmax, "embedding": vocab_rows * H * b,
            "lm_head": vocab_rows * H * head, "router+norms": L * (E * H * 4 + 2 * H * b) + H * b}


def plan_memory(cfg: ModelConfig, tp_size: int, quantization: str | None, dtype=torch.bfloat16,
                gpu_bytes: int = 80 * 2**30, gpu_memory_utilization: float = 0.9, max_model_len: int = LONG_SESSION,
                max_num_seqs: int = 1, cuda_graphs: bool = False,
                prefill_chunk: int = PREFILL_CHUNK_TOKENS) -> MemoryPlan:
    """The plan for `tp_size` GPUs of `gpu_bytes` each (weights, KV per token, state per sequence, per GPU)."""
    if cfg.num_heads % tp_size:
        raise ValueError(f"tensor_parallel_size={tp_size} does not divide num_attention_heads={cfg.num_heads}")
    heads, kv_heads = cfg.num_heads // tp_size, max(1, cfg.num_kv_heads // tp_size)
    kv_token = len(cfg.softmax_layers) * 2 * kv_heads * cfg.head_dim * _bytes(dtype)
    state = len(cfg.lightning_layers) * heads * cfg.head_dim ** 2 * 4
    return MemoryPlan(tp_size, quantization, int(gpu_bytes), int(gpu_bytes * gpu_memory_utilization),
                      weights_per_gpu(cfg, tp_size, quantization, dtype), kv_token, state, max_model_len, max_num_seqs,
                      GRAPH_RESERVE if cuda_graphs else 0, prefill_chunk,
                      activation_bytes_per_token(cfg, tp_size, dtype))


def activation_bytes_per_token(cfg: ModelConfig, tp: int, dtype=torch.bfloat16) -> int:
    """Working set per prefill token on one GPU at its peak: the larger of an MoE block's and a lightning layer's.

    Counted from what the code keeps alive (the model loop's layer input x, the decoder's residual and normed h):
    - MoE (kernels/moe/fused.py, prefill): 3 residual-stream rows [H], then per routed slot (top_k per token) gate/up
      [2I/tp] and SiLU(gate)*up [I/tp] in the dtype and the down projection [H] in fp32, and the fp32 sum over slots
      plus its cast [H]: 3*H*b + top_k*(3*I/tp*b + 4*H) + H*(4 + b). On the H200 (TP1, 16k chunk) this predicts
      3.83 GB; the 1M run's peak (60.65 GB) minus its weights, cache and graph pool leaves 3.8-4.1 GB. (With
      kernels/moe SILU_UP on, gate/up is never materialised: 2*I/tp*b less per slot; off by default.)
    - lightning: x and h [H], SiLU'd qkv [3*inner/tp], o, gate [inner/tp] and the output norm's fp32 pair
      [2*inner/tp*4]: 2*H*b + inner/tp*(5*b + 8).
    Softmax layers hold less (q, k, v, rotary copies, out). Router probabilities [E] fp32 are included."""
    b, H = _bytes(dtype), cfg.hidden_size
    inner = cfg.num_heads * cfg.head_dim // tp
    moe = 3 * H * b + cfg.top_k * (3 * cfg.intermediate_size // tp * b + 4 * H) + H * (4 + b) + cfg.num_experts * 4
    lightning = 2 * H * b + inner * (5 * b + 8)
    return max(moe, lightning)
