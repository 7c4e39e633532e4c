"""Backends behind one interface (`stream`/`generate` of RequestUpdates), chosen with `--backend`:
`m1` (our engine: state reuse, TP, int8 experts), `transformers` (the checkpoint's own code + quanto int8) and
`vllm` (0.9.2-0.23.0, experts_int8). The last two are optional installs: requirements-backends.txt."""
from .base import Backend, BackendNotInstalled

BACKENDS = ("m1", "transformers", "vllm")

__all__ = ["BACKENDS", "Backend", "BackendNotInstalled", "make_backend"]


def make_backend(name: str, model_dir: str, **kwargs):
    """Build the named backend; `kwargs` go to its constructor (for `m1`: LLMEngine's)."""
    if name == "m1":
        from .m1_backend import M1Backend
        return M1Backend(model_dir, **kwargs)
    if name == "transformers":
        from .transformers_backend import TransformersBackend
        return TransformersBackend(model_dir, **kwargs)
    if name == "vllm":
        from .vllm_backend import VllmBackend
        return VllmBackend(model_dir, **kwargs)
    raise ValueError(f"backend must be one of {list(BACKENDS)}, got {name!r}")
