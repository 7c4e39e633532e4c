"""Checkpoint reading: sharded safetensors through `model.safetensors.index.json`, tensor by tensor, memory-mapped.

Each tensor is handed, as a lazily-read `Source`, to its parameter's weight loader, so a loader can take a slice
(tensor parallel) or quantize while loading. Every parameter must be filled exactly once; anything missing,
unexpected or mis-shaped is an error naming the tensor and its file.
"""
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open

from .layers.param import Source, WeightError

INDEX = "model.safetensors.index.json"


def checkpoint_files(model_dir: str | Path) -> dict[str, list[str]]:
    """file path -> tensor names, from the index (official shards are numbered from 0) or a single file."""
    model_dir = Path(model_dir)
    index = model_dir / INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise WeightError(f"{index} has no 'weight_map'")
        by_file: dict[str, list[str]] = defaultdict(list)
        for name, file in weight_map.items():
            by_file[str(model_dir / file)].append(name)
        for file in by_file:
            if not Path(file).is_file():
                raise WeightError(f"{index} lists {Path(file).name}, which is not in {model_dir}")
        return dict(by_file)
    single = model_dir / "model.safetensors"
    if single.is_file():
        with safe_open(str(single), framework="pt") as f:
            return {str(single): list(f.keys())}
    raise WeightError(f"no {INDEX} or model.safetensors in {model_dir}")


def load_weights(model: torch.nn.Module, model_dir: str | Path,
                 progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Fill every parameter of `model` from the checkpoint (each loader reads only what its rank owns).

    Returns {'bytes': filled, 'bytes_read': read from the files, 'read': {tensor name: bytes read}, 'tensors',
    'seconds'}."""
    params = dict(model.named_parameters())
    files = checkpoint_files(model_dir)
    total = sum(len(n) for n in files.values())
    done, nbytes, read, t0 = 0, 0, {}, time.perf_counter()
    for file, names in sorted(files.items()):
        with safe_open(file, framework="pt") as f:
            for name in names:
                target, shard = model.map_name(name)
                if target not in params:
                    raise WeightError(f"tensor '{name}' in {Path(file).name} is not part of this model (unexpected)")
                piece = f.get_slice(name)
                src = Source(name, Path(file).name, tuple(piece.get_shape()), piece)
                param = params[target]
                before = param.loaded_numel
                param.weight_loader(param, src, shard)
                nbytes += (param.loaded_numel - before) * param.element_size()
                read[name] = src.bytes_read
                done += 1
                if progress:
                    progress(done, total, name)
    _check_complete(model, params)
    return {"bytes": nbytes, "bytes_read": sum(read.values()), "read": read, "tensors": done,
            "seconds": time.perf_counter() - t0}


def _check_complete(model, params: dict) -> None:
    tie = getattr(model.cfg, "tie_word_embeddings", False)
    if tie and params["lm_head.weight"].loaded_numel == 0:
        emb = params["model.embed_tokens.weight"]
        params["lm_head.weight"].data.copy_(emb.data)
        params["lm_head.weight"].loaded_numel = emb.numel()
    missing = [n for n, p in params.items() if p.loaded_numel < p.numel()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise WeightError(f"checkpoint is missing tensors for: {shown}")
    doubled = [n for n, p in params.items() if p.loaded_numel > p.numel()]
    if doubled:
        raise WeightError(f"checkpoint provides some tensors twice: {', '.join(doubled[:5])}")
