"""An independent fp64 implementation of the official MiniMax-M1 forward pass (GH modeling_minimax_m1.py math),
read straight from the official-layout safetensors. Slow and simple on purpose: the engine is tested against it."""
import json
import math
from pathlib import Path

import torch
from safetensors import safe_open

F64 = torch.float64


def load_official(model_dir) -> tuple[dict, dict]:
    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())["weight_map"]
    w = {}
    for name, file in index.items():
        with safe_open(str(model_dir / file), framework="pt") as f:
            w[name] = f.get_tensor(name).to(F64)
    return cfg, w


def _rms(x, weight, eps):
    return weight * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def _alibi(n):
    def p2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]
    if math.log2(n).is_integer():
        return p2(n)
    c = 2 ** math.floor(math.log2(n))
    return p2(c) + _alibi(2 * c)[0::2][: n - c]


def _lightning(x, w, p, cfg, layer):
    T = x.shape[0]
    H, D = cfg["num_attention_heads"], cfg["head_dim"]
    qkv = torch.nn.functional.silu(x @ w[f"{p}.qkv_proj.weight"].T).view(T, H, 3 * D)
    q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
    s = torch.tensor(_alibi(H), dtype=F64) * (1 - layer / (cfg["num_hidden_layers"] - 1) + 1e-5)
    S = torch.zeros(H, D, D, dtype=F64)
    o = torch.empty(T, H, D, dtype=F64)
    for t in range(T):
        S = torch.exp(-s)[:, None, None] * S + k[t][:, :, None] * v[t][:, None, :]
        o[t] = torch.einsum("hd,hde->he", q[t], S)
    o = _rms(o.reshape(T, H * D), w[f"{p}.norm.weight"], 1e-6)
    o = torch.sigmoid(x @ w[f"{p}.output_gate.weight"].T) * o
    return o @ w[f"{p}.out_proj.weight"].T


def _softmax_attn(x, w, p, cfg):
    T = x.shape[0]
    H, KV, D, R = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rotary_dim"]
    q = (x @ w[f"{p}.q_proj.weight"].T).view(T, H, D)
    k = (x @ w[f"{p}.k_proj.weight"].T).view(T, KV, D)
    v = (x @ w[f"{p}.v_proj.weight"].T).view(T, KV, D)
    inv = 1.0 / cfg["rope_theta"] ** (torch.arange(0, R, 2, dtype=F64) / R)
    ang = torch.arange(T, dtype=F64)[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos()[:, None], torch.cat([ang, ang], -1).sin()[:, None]

    def rope(t):
        r = t[..., :R]
        rot = torch.cat([-r[..., R // 2:], r[..., :R // 2]], -1)
        return torch.cat([r * cos + rot * sin, t[..., R:]], -1)

    q, k = rope(q), rope(k)
    k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(D)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    o = torch.einsum("hts,shd->thd", scores.softmax(-1), v)
    return o.reshape(T, H * D) @ w[f"{p}.o_proj.weight"].T


def _moe(x, w, p, cfg):
    probs = (x @ w[f"{p}.gate.weight"].T).softmax(-1)
    top, ids = probs.topk(cfg["num_experts_per_tok"], -1)
    top = top / top.sum(-1, keepdim=True)
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = f"{p}.experts.{int(ids[t, j])}"
            h = torch.nn.functional.silu(x[t] @ w[f"{e}.w1.weight"].T) * (x[t] @ w[f"{e}.w3.weight"].T)
            out[t] += top[t, j] * (h @ w[f"{e}.w2.weight"].T)
    return out


def reference_logits(model_dir, token_ids: list[int]) -> torch.Tensor:
    """fp64 logits [T, vocab] of the official math for an official-layout checkpoint."""
    cfg, w = load_official(model_dir)
    eps = cfg["rms_norm_eps"]
    x = w["model.embed_tokens.weight"][torch.tensor(token_ids)]
    for l, kind in enumerate(cfg["attn_type_list"]):
        p = f"model.layers.{l}"
        h = _rms(x, w[f"{p}.input_layernorm.weight"], eps)
        if kind == 0:
            a, alpha = _lightning(h, w, f"{p}.self_attn", cfg, l), cfg["layernorm_linear_attention_alpha"]
        else:
            a, alpha = _softmax_attn(h, w, f"{p}.self_attn", cfg), cfg["layernorm_full_attention_alpha"]
        x = alpha * h + a
        h = _rms(x, w[f"{p}.post_attention_layernorm.weight"], eps)
        x = cfg["layernorm_mlp_alpha"] * h + _moe(h, w, f"{p}.block_sparse_moe", cfg)
    x = _rms(x, w["model.norm.weight"], eps)
    return x @ w["lm_head.weight"].T
