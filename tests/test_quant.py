"""experts_int8: per-row symmetric quantization, quantize-while-loading vs stored-int8 checkpoints (both layouts),
accuracy against the unquantized tiny model, and stored-int8 under TP=2."""
import json

import pytest
import torch

from engine import LLM, SamplingParams
from engine.model.quant import dequantize_rows, quantize_rows, write_int8_checkpoint

GREEDY = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def ids(n, seed=0):
    return torch.randint(0, 2000, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_quantize_rows_is_symmetric_per_row_with_max_over_127():
    w = torch.randn(3, 5, 64) * torch.tensor([0.01, 1.0, 30.0])[:, None, None]
    w[0, 0] = 0  # an all-zero row
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (3, 5)
    assert torch.allclose(scale, w.abs().amax(-1) / 127)
    assert q.abs().max() == 127 and (q[0, 0] == 0).all()
    assert ((dequantize_rows(q, scale) - w).abs() <= scale[..., None] / 2 + 1e-7).all()


@pytest.fixture(scope="module")
def int8_llm(tiny_official):
    return LLM(str(tiny_official), device="cpu", dtype="float32", quantization="experts_int8")


def test_one_int8_moe_layer_error_is_the_rounding_noise(int8_llm, tiny_llm):
    moe = int8_llm.model.model.layers[0].block_sparse_moe
    assert moe.w13.dtype == torch.int8 and moe.w2.dtype == torch.int8 and moe.w13_scale.dtype == torch.float32
    x = torch.randn(64, moe.hidden, generator=torch.Generator().manual_seed(0))
    err = rel(moe(x), tiny_llm.model.model.layers[0].block_sparse_moe(x))
    print(f"one MoE layer, int8 vs fp32: rel err {err:.2e}")
    assert err <= 1.5e-2  # rows of 128-256 Gaussian weights: step max|row|/127, noise step/sqrt(12) per weight


def test_int8_experts_logits_close_to_fp32_with_greedy_agreement(int8_llm, tiny_llm, tiny_official):
    # The random 8-layer tiny model amplifies any rounding: bf16 activations alone move its logits by ~3.6e-2.
    prompt = ids(400)
    ref = tiny_llm.logits(prompt)
    got = int8_llm.logits(prompt)
    bf16 = LLM(str(tiny_official), device="cpu", dtype="bfloat16").logits(prompt)
    err, bf16_err = rel(got, ref), rel(bf16, ref)
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    bf16_agree = (bf16.argmax(-1) == ref.argmax(-1)).float().mean().item()
    print(f"logits vs fp32: int8 experts {err:.2e} (argmax agrees {agree:.1%}), bf16 model {bf16_err:.2e} "
          f"({bf16_agree:.1%})")
    assert err <= 3.5e-2 and err < bf16_err and agree >= max(0.95, bf16_agree)
    out = int8_llm.generate("The quick brown fox", GREEDY)[0].outputs[0].token_ids
    assert out == tiny_llm.generate("The quick brown fox", GREEDY)[0].outputs[0].token_ids


def test_int8_experts_with_bf16_activations(tiny_official, tiny_llm):
    bf16 = LLM(str(tiny_official), device="cpu", dtype="bfloat16")
    q = LLM(str(tiny_official), device="cpu", dtype="bfloat16", quantization="experts_int8")
    prompt = ids(300, seed=1)
    ref = tiny_llm.logits(prompt)
    err, bf16_err = rel(q.logits(prompt), ref), rel(bf16.logits(prompt), ref)
    print(f"bf16 activations vs fp32 logits: int8 experts {err:.2e}, bf16 experts {bf16_err:.2e}")
    assert err <= 1.25 * bf16_err


@pytest.mark.parametrize("layout", ["official", "hf"])
def test_stored_int8_checkpoint_equals_quantize_while_loading(layout, tiny_official, tiny_hf, int8_llm, tmp_path):
    stored = write_int8_checkpoint(tiny_official if layout == "official" else tiny_hf, tmp_path / "int8")
    assert json.loads((stored / "config.json").read_text())["quantization_config"]["quant_method"] == "experts_int8"
    llm = LLM(str(stored), device="cpu", dtype="float32")  # quantization read from the checkpoint
    assert llm.engine.quantization == "experts_int8"
    prompt = ids(200, seed=2)
    assert torch.equal(llm.logits(prompt), int8_llm.logits(prompt))


def test_stored_int8_without_int8_is_refused(tiny_official, tmp_path):
    stored = write_int8_checkpoint(tiny_official, tmp_path / "int8")
    cfg = json.loads((stored / "config.json").read_text())
    del cfg["quantization_config"]
    (stored / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="stored int8; load it with quantization='experts_int8'"):
        LLM(str(stored), device="cpu")


def test_stored_int8_under_tp2_equals_tp1(tiny_official, int8_llm, tmp_path):
    stored = write_int8_checkpoint(tiny_official, tmp_path / "int8")  # full-row scales: TP slices are exact
    llm = LLM(str(stored), device="cpu", dtype="float32", tensor_parallel_size=2, max_model_len=4096)
    try:
        prompt = ids(300, seed=3)
        assert rel(llm.logits(prompt), int8_llm.logits(prompt)) <= 1e-5
    finally:
        llm.close()
