"""MiniMax-M1 assembled: embedding, 80 (or N) post-norm decoder layers of lightning or softmax attention + MoE,
final norm, LM head with fp32 logits. Also maps checkpoint tensor names (official and -hf layouts, bf16 or stored int8) onto
parameters. With a TPGroup of size N every layer holds and loads only its shard (see engine/layers/*).

Kernels: `set_kernel_impl("triton" | "torch" | None)` picks the Triton kernels or the PyTorch references for every
layer (None: Triton on CUDA, references on CPU; CPU tensors run Triton through its interpreter). With Triton, a
decode step also runs the fused small ops (residual + RMSNorm across layer boundaries, router top-k, lightning gate).
"""
import re

import torch
from torch import nn

from kernels.fused import add_rms_norm

from .config import LINEAR, ModelConfig
from .context import ForwardContext
from .layers.attention import SoftmaxAttention
from .layers.embed_head import ParallelLMHead, VocabParallelEmbedding
from .layers.lightning import LightningAttention
from .layers.moe import SparseMoE
from .layers.norm import RMSNorm
from .tp_group import TPGroup

_EXPERT = re.compile(r"^(model\.layers\.\d+)\.block_sparse_moe\.experts\.(\d+)\.(w1|w2|w3)\.weight(_scale)?$")
_FUSED = re.compile(r"^(model\.layers\.\d+)\.mlp\.experts\.(gate_up_proj|down_proj)(?:\.weight)?(_scale)?$")
_HF_GATE = re.compile(r"^(model\.layers\.\d+)\.mlp\.gate\.weight$")


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, idx: int, dtype, device=None, tp: TPGroup | None = None, quantization=None):
        super().__init__()
        self.is_lightning = cfg.layer_types[idx] == LINEAR
        attn = LightningAttention if self.is_lightning else SoftmaxAttention
        self.self_attn = attn(cfg, idx, dtype, device, tp)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, device)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, device)
        self.block_sparse_moe = SparseMoE(cfg, dtype, device, tp, quantization)
        alpha_beta = (cfg.linear_alpha, cfg.linear_beta) if self.is_lightning else (cfg.full_alpha, cfg.full_beta)
        self.attn_alpha, self.attn_beta = alpha_beta
        self.mlp_alpha, self.mlp_beta = cfg.mlp_alpha, cfg.mlp_beta

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        h = self.input_layernorm(x)
        x = self.attn_alpha * h + self.attn_beta * self.self_attn(h, ctx)
        h = self.post_attention_layernorm(x)
        return self.mlp_alpha * h + self.mlp_beta * self.block_sparse_moe(h)


class MiniMaxM1(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, device=None, tp: TPGroup | None = None,
                 quantization: str | None = None):
        super().__init__()
        self.cfg, self.tp, self.quantization = cfg, tp or TPGroup(), quantization
        V, H = cfg.vocab_size, cfg.hidden_size
        self.model = nn.Module()
        self.model.embed_tokens = VocabParallelEmbedding(V, H, self.tp, dtype, device)
        self.model.layers = nn.ModuleList(DecoderLayer(cfg, i, dtype, device, self.tp, quantization)
                                          for i in range(cfg.num_layers))
        self.model.norm = RMSNorm(H, cfg.rms_norm_eps, dtype, device)
        self.lm_head = ParallelLMHead(V, H, self.tp, device, dtype)
        self.fused_ops = False
        self.set_kernel_impl(None, device=device)

    def set_kernel_impl(self, impl: str | None, attention: str | None = None, device=None) -> None:
        """Triton kernels or PyTorch references in every layer; `attention="sdpa"` keeps the softmax layers on SDPA."""
        if impl not in (None, "torch", "triton") or attention not in (None, "sdpa", "triton"):
            raise ValueError(f"kernel_impl must be None, 'torch' or 'triton' and attention_impl None, 'sdpa' or "
                             f"'triton'; got {impl!r}, {attention!r}")
        device = torch.device(device) if device is not None else next(self.parameters()).device
        auto = "triton" if device.type == "cuda" else "torch"
        chosen = impl or auto
        for layer in self.model.layers:
            attn = layer.self_attn
            if layer.is_lightning:
                attn.impl = chosen
            else:
                attn.impl = {"sdpa": "torch", "triton": "triton", None: chosen}[attention]
            if impl is not None:
                layer.block_sparse_moe.impl = impl
            layer.block_sparse_moe.fused_router = chosen == "triton"
            attn.fused_gate = chosen == "triton"
        self.fused_ops = chosen == "triton"

    def forward(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """input_ids [T] packed -> final hidden states [T, hidden]."""
        x = self.model.embed_tokens(input_ids)
        if self.fused_ops and ctx.is_decode:
            return self._fused_decode(x, ctx)
        for layer in self.model.layers:
            x = layer(x, ctx)
        return self.model.norm(x)

    def _fused_decode(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """The same layers with each residual add fused into the RMSNorm that follows it (one launch per pair)."""
        layers = self.model.layers
        h = layers[0].input_layernorm(x)
        for i, layer in enumerate(layers):
            a = layer.self_attn(h, ctx)
            post = layer.post_attention_layernorm
            h2, _ = add_rms_norm(h, a, post.weight, post.eps, layer.attn_alpha, layer.attn_beta)
            m = layer.block_sparse_moe(h2)
            nxt = layers[i + 1].input_layernorm if i + 1 < len(layers) else self.model.norm
            h, _ = add_rms_norm(h2, m, nxt.weight, nxt.eps, layer.mlp_alpha, layer.mlp_beta)
        return h

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """fp32 logits from fp32 activations and accumulation (MiniMax moved the head to fp32: bf16 logits
        drifted); rank 0 only."""
        return self.lm_head(hidden)

    def map_name(self, name: str) -> tuple[str, object]:
        """Checkpoint tensor name (either layout) -> (parameter name, shard id for its weight loader)."""
        if m := _EXPERT.match(name):
            prefix, e, w, scale = m.groups()
            return f"{prefix}.block_sparse_moe.{'w2' if w == 'w2' else 'w13'}{scale or ''}", (w, int(e))
        if m := _FUSED.match(name):
            prefix, kind, scale = m.groups()
            return (f"{prefix}.block_sparse_moe.w13{scale or ''}", ("gate_up", None)) if kind == "gate_up_proj" \
                else (f"{prefix}.block_sparse_moe.w2{scale or ''}", ("down", None))
        if m := _HF_GATE.match(name):
            return f"{m.group(1)}.block_sparse_moe.gate.weight", None
        return name, None
