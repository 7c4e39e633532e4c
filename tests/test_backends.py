"""Backends: argument construction as the seed runs M1 (transformers + quanto int8, vLLM experts_int8), clear
"not installed" errors, and the shared streaming contract on real models (our engine; transformers' own MiniMax on
the tiny -hf checkpoint, unquantized on CPU)."""
import sys

import pytest
import torch

from engine import SamplingParams
from engine.backends import BackendNotInstalled, make_backend
from engine.backends.transformers_backend import generate_kwargs, keep_unquantized, model_kwargs
from engine.backends.vllm_backend import check_version, engine_args, sampling_kwargs

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


def test_transformers_int8_without_quanto_says_what_to_install(tiny_hf, monkeypatch):
    monkeypatch.setitem(sys.modules, "optimum.quanto", None)
    with pytest.raises(BackendNotInstalled, match=r"pip install optimum-quanto==0\.2\.7"):
        model_kwargs(str(tiny_hf), quantize_int8=True)


def test_transformers_arguments(tiny_hf):
    kw = model_kwargs(str(tiny_hf), dtype="bfloat16", quantize_int8=False)
    assert kw == {"trust_remote_code": True, "dtype": torch.bfloat16, "device_map": "auto"}
    keep = keep_unquantized(80)
    assert keep[:2] == ["lm_head", "embed_tokens"] and "model.layers.79.block_sparse_moe.gate" in keep
    assert "model.layers.0.coefficient" in keep and len(keep) == 2 + 160
    assert generate_kwargs(GREEDY, {7}) == {"max_new_tokens": 8, "do_sample": False, "eos_token_id": None}
    sampled = generate_kwargs(SamplingParams(temperature=1.0, top_p=0.95, max_tokens=5), {7, 3})
    assert sampled == {"max_new_tokens": 5, "do_sample": True, "temperature": 1.0, "top_p": 0.95, "top_k": None,
                       "eos_token_id": [3, 7]}


def test_vllm_arguments_follow_the_official_launch():
    assert engine_args("/m", tensor_parallel_size=8, max_model_len=65536) == {
        "model": "/m", "tensor_parallel_size": 8, "quantization": "experts_int8", "max_model_len": 65536,
        "dtype": "bfloat16", "trust_remote_code": True, "enable_prefix_caching": False, "gpu_memory_utilization": 0.9}
    assert sampling_kwargs(SamplingParams(temperature=0.7, top_k=0, max_tokens=9, seed=3)) == {
        "temperature": 0.7, "top_p": 0.95, "top_k": -1, "max_tokens": 9, "seed": 3, "ignore_eos": False,
        "stop_token_ids": []}


@pytest.mark.parametrize("version, ok", [("0.9.2", True), ("0.10.1.1", True), ("0.23.0", True),
                                         ("0.9.1", False), ("0.23.1", False), ("0.33.0", False)])
def test_vllm_versions_that_run_m1(version, ok):
    if ok:
        check_version(version)
    else:
        with pytest.raises(RuntimeError, match="0.9.2 to 0.23.0"):
            check_version(version)


def test_vllm_not_installed(tiny_official):
    with pytest.raises(BackendNotInstalled, match=r"pip install 'vllm>=0\.9\.2,<=0\.23\.0'"):
        check_version(None)
    if "vllm" not in sys.modules:
        with pytest.raises(BackendNotInstalled, match="vllm"):
            make_backend("vllm", str(tiny_official))


def test_unknown_backend_is_refused(tiny_official):
    with pytest.raises(ValueError, match="backend must be one of"):
        make_backend("sglang", str(tiny_official))


def test_m1_backend_streams_like_the_llm(tiny_official, tiny_llm):
    backend = make_backend("m1", str(tiny_official), device="cpu", dtype="float32")
    assert backend.supports_state_reuse
    prompt = tiny_llm.tokenizer.encode("Hello there")
    out = backend.generate([prompt], GREEDY)[0].outputs[0]
    want = tiny_llm.generate(prompt_token_ids=prompt, sampling_params=GREEDY)[0].outputs[0]
    assert out.token_ids == want.token_ids and out.text == want.text


def test_transformers_backend_streams_its_own_greedy_tokens(tiny_hf):
    backend = make_backend("transformers", str(tiny_hf), dtype="float32", quantize_int8=False, device_map=None)
    assert not backend.supports_state_reuse
    prompt = backend.tokenizer.encode("Once upon a time")
    updates = list(backend.stream(prompt, GREEDY))
    tokens = [t for u in updates for t in u.token_ids]
    with torch.no_grad():
        ref = backend.model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0, len(prompt):]
    assert tokens == ref.tolist()
    assert updates[-1].finished and updates[-1].finish_reason == "length"
    assert "".join(u.text for u in updates) == backend.tokenizer.decode(tokens)
