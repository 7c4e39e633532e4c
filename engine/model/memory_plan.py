"""What goes where before anything loads: weights per GPU, KV + state budget, concurrent full-length sessions.

Pure arithmetic from the ModelConfig (testable on CPU with the real M1 config). Mirrors how the engine shards:
heads / kv heads (replicated when fewer than ranks) / expert intermediate rows split N ways, vocabulary split with
padding, router gates and norms replicated, LM head in the model dtype when bf16 (fp32 otherwise), experts int8 +
fp32 row scales with `experts_int8`. Also the decode CUDA graphs' memory (reserved before capture, then the
measured figure) and the peak of a 1M-token prefill per GPU (weights + its KV and state + one chunk's activations).
"""
from dataclasses import dataclass

import torch

from .config import ModelConfig

GB = 1e9
ACTIVATION_RESERVE = 2 << 30  # what the engine keeps free for activations when sizing the KV cache
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
    prefill_chunk: int = 8192
    activation_bytes_per_token: int = 0  # one prefill chunk's working set per token (the largest layer's)

    @property
    def weight_bytes(self) -> int:
        return sum(self.weights.values())

    @property
    def cache_budget(self) -> int:
        """Bytes per GPU left for KV cache and lightning states."""
        return self.usable_bytes - self.weight_bytes - ACTIVATION_RESERVE - self.graph_bytes

    def prefill_peak(self, num_tokens: int = LONG_SESSION) -> int:
        """Peak bytes per GPU while prefilling one `num_tokens` prompt: weights, its KV and state, graphs, and the
        activations of one chunk (an estimate; bench/scale.py measures it)."""
        return (self.weight_bytes + self.graph_bytes + self.state_bytes_per_seq + num_tokens * self.kv_bytes_per_token
                + self.prefill_chunk * self.activation_bytes_per_token)

    def sessions(self, num_tokens: int) -> int:
        """How many sequences of `num_tokens` tokens fit the cache budget at once (KV + one state slot each)."""
        per = self.state_bytes_per_seq + num_tokens * self.kv_bytes_per_token
        return max(0, self.cache_budget // per)

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GB:.2f}" for k, v in self.weights.items())
        return "\n".join([
            f"memory plan: TP={self.tp_size}, quantization={self.quantization or 'none'}, "
            f"{self.gpu_bytes / GB:.1f} GB per GPU ({self.usable_bytes / GB:.1f} GB usable)",
            f"  weights per GPU: {self.weight_bytes / GB:.2f} GB ({parts})",
            f"  KV {self.kv_bytes_per_token / 1024:.1f} KiB/token/GPU, lightning state "
            f"{self.state_bytes_per_seq / 1e6:.1f} MB/sequence/GPU; budget {self.cache_budget / GB:.2f} GB/GPU",
            f"  concurrent sessions: {self.sessions(LONG_SESSION)} of 1M tokens, "
            f"{self.sessions(self.max_model_len)} of max_model_len={self.max_model_len}",
            f"  decode CUDA graphs {self.graph_bytes / GB:.2f} GB; 1M-token prefill peak "
            f"{self.prefill_peak() / GB:.1f} GB/GPU ({self.prefill_chunk}-token chunks)",
        ])

    def check(self) -> None:
        """Raise MemoryPlanError when the weights, or one max_model_len session, do not fit."""
        if self.cache_budget <= 0:
            raise MemoryPlanError(
                f"the model needs {self.weight_bytes / GB:.1f} GB of weights per GPU at tensor_parallel_size="
                f"{self.tp_size} (quantization={self.quantization}), but only "
                f"{(self.usable_bytes - ACTIVATION_RESERVE) / GB:.1f} GB per GPU are usable: use more GPUs, larger "
                f"GPUs, or quantization='experts_int8'")
        if self.sessions(self.max_model_len) < 1:
            fits = self.cache_budget // self.kv_bytes_per_token if self.kv_bytes_per_token else 0
            raise MemoryPlanError(
                f"max_model_len={self.max_model_len} needs {self.max_model_len * self.kv_bytes_per_token / GB:.1f} GB "
                f"of KV per GPU but {self.cache_budget / GB:.2f} GB are left after weights: lower max_model_len "
                f"(about {fits} fits) or use more GPUs")


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
                max_num_seqs: int = 1, cuda_graphs: bool = False, prefill_chunk: int = 8192) -> MemoryPlan:
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
    """Working set per prefill token on one GPU: the residual stream (x, h, layer output) plus the larger of a
    lightning layer's (qkv, SiLU'd qkv, output, gate: 6 x inner/tp) and the MoE's (top_k slots of gate/up [2I/tp],
    SiLU'd [I/tp], down [H], fp32 router probabilities)."""
    b, H = _bytes(dtype), cfg.hidden_size
    inner = cfg.num_heads * cfg.head_dim // tp
    moe = cfg.top_k * (3 * cfg.intermediate_size // tp + H) * b + cfg.num_experts * 4
    return 3 * H * b + max(6 * inner * b, moe)
