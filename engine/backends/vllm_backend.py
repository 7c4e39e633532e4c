"""The seed's `VllmEngine` path: vLLM with `tensor_parallel_size`, `quantization="experts_int8"`, `max_model_len`.

MiniMax-M1 runs on vLLM 0.9.2 (fp32 LM head and linear-attention state) up to 0.23.0 (its model file was removed
after that); prefix caching is off because vLLM cannot reuse lightning state.
"""
import threading

from ..serving.sampling import SamplingParams
from ..text.tokenizer import load_tokenizer
from .base import Backend, BackendNotInstalled, installed_version, require

VLLM_PIP = "'vllm>=0.9.2,<=0.23.0'"
SUPPORTED = ((0, 9, 2), (0, 23, 0))


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_version(version: str | None) -> None:
    """Raise when vLLM is missing or outside the releases that support M1."""
    if version is None:
        raise BackendNotInstalled(f"the vllm backend is not installed: pip install {VLLM_PIP} "
                                  "(or pip install -r requirements-backends.txt)")
    low, high = SUPPORTED
    if not low <= _version_tuple(version) <= high:
        raise RuntimeError(f"vLLM {version} cannot run MiniMax-M1: use 0.9.2 to 0.23.0 (M1 was removed later, "
                           f"and older releases lack the fp32 LM head): pip install {VLLM_PIP}")


def engine_args(model_dir: str, tensor_parallel_size: int = 8, quantization: str | None = "experts_int8",
                max_model_len: int = 1 << 20, dtype: str = "bfloat16", gpu_memory_utilization: float = 0.9) -> dict:
    """Keyword arguments for `vllm.EngineArgs` as the official deployment guide launches M1."""
    return {"model": model_dir, "tensor_parallel_size": tensor_parallel_size, "quantization": quantization,
            "max_model_len": max_model_len, "dtype": dtype, "trust_remote_code": True,
            "enable_prefix_caching": False, "gpu_memory_utilization": gpu_memory_utilization}


def sampling_kwargs(params: SamplingParams) -> dict:
    """`vllm.SamplingParams` arguments for ours (stop strings are applied by our stream, on our decoded text)."""
    return {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k or -1,
            "max_tokens": params.max_tokens, "seed": params.seed, "ignore_eos": params.ignore_eos,
            "stop_token_ids": list(params.stop_token_ids)}


class VllmBackend(Backend):
    name = "vllm"

    def __init__(self, model_dir: str, **kwargs):
        check_version(installed_version("vllm"))
        vllm = require("vllm", VLLM_PIP, "vllm")
        super().__init__(load_tokenizer(model_dir))
        self.vllm = vllm
        self.engine = vllm.LLMEngine.from_engine_args(vllm.EngineArgs(**engine_args(model_dir, **kwargs)))
        self.lock = threading.Lock()  # one stream steps the engine at a time

    def tokens(self, prompt_token_ids, params, request_id):
        with self.lock:
            prompt = {"prompt_token_ids": prompt_token_ids}
            self.engine.add_request(request_id, prompt, self.vllm.SamplingParams(**sampling_kwargs(params)))
            sent, done = 0, False
            try:
                while not done:
                    for out in self.engine.step():
                        if out.request_id != request_id:
                            continue
                        ids = out.outputs[0].token_ids
                        yield from ids[sent:]
                        sent, done = len(ids), out.finished
            finally:
                if not done:
                    self.engine.abort_request([request_id])
