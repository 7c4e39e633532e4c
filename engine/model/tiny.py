"""Write a small MiniMax-M1 checkpoint with random weights in exactly the real layouts.

    python -m engine.tiny OUT_DIR [--layout official|hf] [--seed N] [--preset tiny|medium] [--shards N]

`official` = MiniMaxAI/MiniMax-M1 (config `attn_type_list`, per-expert w1/w2/w3, 0-based shard names, fp32 router);
`hf` = the transformers `minimax` layout (`layer_types`, `*_alpha_factor`, fused `mlp.experts.gate_up_proj`).
The same seed gives the same weights in both layouts. The weights are random: the model babbles.
"""
import argparse
import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

PRESETS = {
    # hybrid, non-power-of-2 heads, head_dim != hidden/heads, GQA, partial RoPE
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=8, num_attention_heads=6, head_dim=32,
                 num_key_value_heads=2, rotary_dim=16, num_local_experts=4, num_experts_per_tok=2,
                 softmax_every=4, num_merges=2000),
    # about 1.3 GB in bf16 (for load-time / memory measurements)
    "medium": dict(hidden_size=1024, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8, head_dim=128,
                   num_key_value_heads=2, rotary_dim=64, num_local_experts=4, num_experts_per_tok=2,
                   softmax_every=8, num_merges=None),
}


def official_config(p: dict, vocab_size: int) -> dict:
    L = p["num_hidden_layers"]
    every = p["softmax_every"]
    alpha = (2 * L) ** 0.25
    return {
        "architectures": ["MiniMaxM1ForCausalLM"], "model_type": "minimax_m1",
        "hidden_size": p["hidden_size"], "intermediate_size": p["intermediate_size"], "num_hidden_layers": L,
        "num_attention_heads": p["num_attention_heads"], "num_key_value_heads": p["num_key_value_heads"],
        "head_dim": p["head_dim"], "vocab_size": vocab_size, "num_local_experts": p["num_local_experts"],
        "num_experts_per_tok": p["num_experts_per_tok"],
        "attn_type_list": [1 if (i + 1) % every == 0 else 0 for i in range(L)],
        "rotary_dim": p["rotary_dim"], "rope_theta": 10_000_000,
        **{f"layernorm_{k}_alpha": alpha for k in ("full_attention", "linear_attention", "mlp")},
        **{f"layernorm_{k}_beta": 1.0 for k in ("full_attention", "linear_attention", "mlp")},
        "postnorm": True, "rms_norm_eps": 1e-5, "max_position_embeddings": 10_240_000, "shared_intermediate_size": 0,
        "tie_word_embeddings": False, "hidden_act": "silu", "bos_token_id": None, "eos_token_id": None,
        "torch_dtype": "bfloat16", "transformers_version": "4.45.2",
    }


def hf_config(official: dict) -> dict:
    c = {k: v for k, v in official.items() if not k.startswith("layernorm_") and k not in
         ("attn_type_list", "postnorm", "rotary_dim", "rope_theta", "shared_intermediate_size")}
    alpha = official["layernorm_mlp_alpha"]
    c.update(architectures=["MiniMaxForCausalLM"], model_type="minimax", block_size=256,
             layer_types=["full_attention" if t else "linear_attention" for t in official["attn_type_list"]],
             rope_parameters={"rope_type": "default", "rope_theta": official["rope_theta"],
                              "partial_rotary_factor": official["rotary_dim"] / official["head_dim"]},
             full_attn_alpha_factor=alpha, full_attn_beta_factor=1.0, linear_attn_alpha_factor=alpha,
             linear_attn_beta_factor=1.0, mlp_alpha_factor=alpha, mlp_beta_factor=1.0, dtype="bfloat16")
    c.pop("torch_dtype")
    return c


def official_tensors(cfg: dict, seed: int, dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    """Random weights under the official tensor names (router gate fp32, everything else `dtype`)."""
    g = torch.Generator().manual_seed(seed)
    H, I, E = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_local_experts"]
    inner, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]

    def rand(*shape, dt=dtype):
        return (torch.randn(*shape, generator=g) / math.sqrt(shape[-1])).to(dt)

    def norm(n):
        return (1 + 0.1 * torch.randn(n, generator=g)).to(dtype)

    t = {"model.embed_tokens.weight": torch.randn(cfg["vocab_size"], H, generator=g).to(dtype)}
    for l, kind in enumerate(cfg["attn_type_list"]):
        p = f"model.layers.{l}"
        if kind == 0:
            t |= {f"{p}.self_attn.qkv_proj.weight": rand(3 * inner, H), f"{p}.self_attn.output_gate.weight": rand(inner, H),
                  f"{p}.self_attn.out_proj.weight": rand(H, inner), f"{p}.self_attn.norm.weight": norm(inner)}
        else:
            t |= {f"{p}.self_attn.q_proj.weight": rand(inner, H), f"{p}.self_attn.k_proj.weight": rand(kv, H),
                  f"{p}.self_attn.v_proj.weight": rand(kv, H), f"{p}.self_attn.o_proj.weight": rand(H, inner)}
        t |= {f"{p}.input_layernorm.weight": norm(H), f"{p}.post_attention_layernorm.weight": norm(H),
              f"{p}.block_sparse_moe.gate.weight": rand(E, H, dt=torch.float32)}
        for e in range(E):
            q = f"{p}.block_sparse_moe.experts.{e}"
            t |= {f"{q}.w1.weight": rand(I, H), f"{q}.w3.weight": rand(I, H), f"{q}.w2.weight": rand(H, I)}
    t |= {"model.norm.weight": norm(H), "lm_head.weight": rand(cfg["vocab_size"], H)}
    return t


def to_hf_names(t: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    """Official names -> transformers `minimax` names: experts fused per layer, router under `mlp.gate`."""
    out, E = {}, cfg["num_local_experts"]
    for name, w in t.items():
        if ".block_sparse_moe.experts." not in name:
            out[name.replace(".block_sparse_moe.gate.", ".mlp.gate.")] = w
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}.block_sparse_moe.experts"
        out[f"model.layers.{l}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([t[f"{p}.{e}.w1.weight"], t[f"{p}.{e}.w3.weight"]]) for e in range(E)])
        out[f"model.layers.{l}.mlp.experts.down_proj"] = torch.stack([t[f"{p}.{e}.w2.weight"] for e in range(E)])
    return out


def save_sharded(tensors: dict[str, torch.Tensor], out: Path, num_shards: int) -> None:
    """Spread tensors over `model-0000i-of-0000N.safetensors` (numbered from 0, as M1 does) plus the index."""
    names = list(tensors)
    shards = [names[i::num_shards] for i in range(num_shards)]
    weight_map, total = {}, 0
    for i, group in enumerate(shards):
        fname = f"model-{i:05d}-of-{num_shards:05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in group}, str(out / fname), metadata={"format": "pt"})
        for n in group:
            weight_map[n] = fname
            total += tensors[n].numel() * tensors[n].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_checkpoint(out_dir, layout: str = "official", seed: int = 0, preset: str = "tiny",
                     num_shards: int = 4, overrides: dict | None = None, dtype=torch.bfloat16) -> Path:
    """Write a complete model directory (config, weights, tokenizer, generation config). Returns its path."""
    from ..text.tokenizer import write_tokenizer_files
    if layout not in ("official", "hf"):
        raise ValueError(f"layout must be 'official' or 'hf', got {layout!r}")
    p = {**PRESETS[preset], **(overrides or {})}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_tok = write_tokenizer_files(out, num_merges=p["num_merges"])
    cfg = official_config(p, vocab_size=-(-n_tok // 64) * 64)
    if "attn_type_list" in p:
        cfg["attn_type_list"] = list(p["attn_type_list"])
    tensors = official_tensors(cfg, seed, dtype)
    if layout == "hf":
        tensors, cfg = to_hf_names(tensors, cfg), hf_config(cfg)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    eos = tok_cfg.get("eos_token", "<end_of_sentence>")
    vocab = json.loads((out / "tokenizer.json").read_text())
    eos_id = next(t["id"] for t in vocab["added_tokens"] if t["content"] == (eos["content"] if isinstance(eos, dict) else eos))
    gen = {"eos_token_id": eos_id, "temperature": 1.0, "top_p": 0.95, "do_sample": True,
           "m1_studio_note": "random weights written by engine.tiny"}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    save_sharded(tensors, out, num_shards)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--layout", choices=["official", "hf"], default="official")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--shards", type=int, default=4)
    a = ap.parse_args()
    path = write_checkpoint(a.out_dir, a.layout, a.seed, a.preset, a.shards)
    print(f"wrote a {a.preset} M1 checkpoint with random weights ({a.layout} layout) to {path}")


if __name__ == "__main__":
    main()
