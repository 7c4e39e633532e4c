"""MiniMax-M1 assembled: embedding, 80 (or N) post-norm decoder layers of lightning or softmax attention + MoE,
final norm, fp32 LM head. Also maps checkpoint tensor names (official and -hf layouts) onto parameters."""
import re

import torch
from torch import nn

from .config import LINEAR, ModelConfig
from .context import ForwardContext
from .layers.attention import SoftmaxAttention
from .layers.lightning import LightningAttention
from .layers.moe import SparseMoE
from .layers.norm import RMSNorm
from .layers.param import make_param

_EXPERT = re.compile(r"^(model\.layers\.\d+)\.block_sparse_moe\.experts\.(\d+)\.(w1|w2|w3)\.weight$")
_FUSED = re.compile(r"^(model\.layers\.\d+)\.mlp\.experts\.(gate_up_proj|down_proj)(?:\.weight)?$")
_HF_GATE = re.compile(r"^(model\.layers\.\d+)\.mlp\.gate\.weight$")


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, idx: int, dtype, device=None):
        super().__init__()
        self.is_lightning = cfg.layer_types[idx] == LINEAR
        attn = LightningAttention if self.is_lightning else SoftmaxAttention
        self.self_attn = attn(cfg, idx, dtype, device)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, device)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, device)
        self.block_sparse_moe = SparseMoE(cfg, dtype, device)
        alpha_beta = (cfg.linear_alpha, cfg.linear_beta) if self.is_lightning else (cfg.full_alpha, cfg.full_beta)
        self.attn_alpha, self.attn_beta = alpha_beta
        self.mlp_alpha, self.mlp_beta = cfg.mlp_alpha, cfg.mlp_beta

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        h = self.input_layernorm(x)
        x = self.attn_alpha * h + self.attn_beta * self.self_attn(h, ctx)
        h = self.post_attention_layernorm(x)
        return self.mlp_alpha * h + self.mlp_beta * self.block_sparse_moe(h)


class MiniMaxM1(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, device=None):
        super().__init__()
        self.cfg = cfg
        self.model = nn.Module()
        self.model.embed_tokens = nn.Module()
        self.model.embed_tokens.weight = make_param((cfg.vocab_size, cfg.hidden_size), dtype, device)
        self.model.layers = nn.ModuleList(DecoderLayer(cfg, i, dtype, device) for i in range(cfg.num_layers))
        self.model.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, device)
        self.lm_head = nn.Module()
        self.lm_head.weight = make_param((cfg.vocab_size, cfg.hidden_size), torch.float32, device)

    def forward(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """input_ids [T] packed -> final hidden states [T, hidden]."""
        x = self.model.embed_tokens.weight[input_ids]
        for layer in self.model.layers:
            x = layer(x, ctx)
        return self.model.norm(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 LM head on fp32 hidden states (MiniMax moved the head to fp32: bf16 logits drifted)."""
        return hidden.float() @ self.lm_head.weight.t()

    def map_name(self, name: str) -> tuple[str, object]:
        """Checkpoint tensor name (either layout) -> (parameter name, shard id for its weight loader)."""
        if m := _EXPERT.match(name):
            prefix, e, w = m.groups()
            return f"{prefix}.block_sparse_moe.{'w2' if w == 'w2' else 'w13'}", (w, int(e))
        if m := _FUSED.match(name):
            prefix, kind = m.groups()
            return (f"{prefix}.block_sparse_moe.w13", ("gate_up", None)) if kind == "gate_up_proj" \
                else (f"{prefix}.block_sparse_moe.w2", ("down", None))
        if m := _HF_GATE.match(name):
            return f"{m.group(1)}.block_sparse_moe.gate.weight", None
        return name, None
