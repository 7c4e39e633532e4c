"""`experts_int8`: weight-only int8 for the MoE experts (as vLLM's `experts_int8`); everything else stays in dtype.

Per expert and per OUTPUT row: scale = max|row| / 127 (fp32), q = round(w / scale) clamped to [-127, 127].
Quantized while loading (each rank quantizes the slice it owns, so under tensor parallelism a w2 row's scale is
that of the rank's column slice, as in vLLM), or read from a checkpoint already stored int8.

Stored-int8 layout (written by `write_int8_checkpoint`; config.json gets
`"quantization_config": {"quant_method": "experts_int8"}`):
- official names: `...experts.E.w1.weight` int8 [I, H] + `...experts.E.w1.weight_scale` fp32 [I]; same for w3;
  `...experts.E.w2.weight` int8 [H, I] + `...w2.weight_scale` fp32 [H];
- -hf names: `...mlp.experts.gate_up_proj` int8 [E, 2I, H] + `...gate_up_proj_scale` fp32 [E, 2I];
  `...mlp.experts.down_proj` int8 [E, H, I] + `...down_proj_scale` fp32 [E, H].
"""
import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open

EXPERTS_INT8 = "experts_int8"
METHODS = (EXPERTS_INT8,)


def check_quantization(requested: str | None, stored: str | None) -> str | None:
    """The quantization to build: the stored one wins over None; anything unknown or contradictory is an error."""
    for name in (requested, stored):
        if name is not None and name not in METHODS:
            raise ValueError(f"quantization={name!r} is not supported; choose one of {list(METHODS)} or None")
    if stored and requested not in (None, stored):
        raise ValueError(f"the checkpoint is stored as {stored!r}; quantization={requested!r} cannot load it")
    return requested or stored


def stored_quantization(raw_config: dict) -> str | None:
    """`quant_method` of a checkpoint's config.json `quantization_config`, if any."""
    qc = raw_config.get("quantization_config") or {}
    return qc.get("quant_method")


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [..., rows, cols] -> (int8 [..., rows, cols], fp32 scale [..., rows]); symmetric, one scale per row."""
    w = w.float()
    scale = w.abs().amax(dim=-1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = (w / safe[..., None]).round().clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return (q.float() * scale.float()[..., None]).to(dtype)


def _is_expert_weight(name: str) -> bool:
    return (".block_sparse_moe.experts." in name and name.endswith(".weight")) or \
        name.endswith((".mlp.experts.gate_up_proj", ".mlp.experts.down_proj"))


def write_int8_checkpoint(src_dir, dst_dir) -> Path:
    """Copy a checkpoint directory with every expert weight stored int8 + per-row fp32 scales (layout above)."""
    from safetensors.torch import save_file
    src, dst = Path(src_dir), Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    weight_map = {}
    for file in sorted(set(index["weight_map"].values())):
        out = {}
        with safe_open(str(src / file), framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                if _is_expert_weight(name):
                    out[name], out[name + "_scale"] = quantize_rows(t)
                else:
                    out[name] = t
        save_file(out, str(dst / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in out})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
    for extra in src.iterdir():
        if extra.is_file() and not extra.name.endswith(".safetensors") and extra.name != "model.safetensors.index.json":
            shutil.copy(extra, dst / extra.name)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": EXPERTS_INT8}
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst
