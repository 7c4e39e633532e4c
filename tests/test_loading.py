"""Config reading (official, -hf, the real M1 config) and every bad-input error of the loader."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import LLM
from engine.model.config import ConfigError, ModelConfig
from engine.model.layers.param import WeightError
from engine.model.model import MiniMaxM1

ALPHA = 3.5565588200778455
REAL_M1 = {
    "architectures": ["MiniMaxM1ForCausalLM"], "model_type": "minimax_m1", "hidden_size": 6144,
    "intermediate_size": 9216, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
    "head_dim": 128, "vocab_size": 200064, "num_local_experts": 32, "num_experts_per_tok": 2,
    "attn_type_list": [1 if (i + 1) % 8 == 0 else 0 for i in range(80)], "rotary_dim": 64, "rope_theta": 10000000,
    "layernorm_full_attention_alpha": ALPHA, "layernorm_linear_attention_alpha": ALPHA, "layernorm_mlp_alpha": ALPHA,
    "layernorm_full_attention_beta": 1.0, "layernorm_linear_attention_beta": 1.0, "layernorm_mlp_beta": 1.0,
    "postnorm": True, "rms_norm_eps": 1e-05, "max_position_embeddings": 10240000, "shared_intermediate_size": 0,
    "tie_word_embeddings": False, "hidden_act": "silu", "bos_token_id": None, "eos_token_id": None,
}


def test_real_m1_config_builds_the_456b_model_on_meta():
    cfg = ModelConfig.from_dict(REAL_M1)
    assert len(cfg.lightning_layers) == 70 and cfg.softmax_layers == [7, 15, 23, 31, 39, 47, 55, 63, 71, 79]
    assert cfg.rotary_dim == 64 and cfg.mlp_alpha == ALPHA and cfg.lightning_norm_eps == 1e-6
    model = MiniMaxM1(cfg, torch.bfloat16, device="meta")
    assert sum(p.numel() for p in model.parameters()) == 456_089_655_296
    assert model.model.layers[0].block_sparse_moe.gate.weight.dtype == torch.float32


def test_other_architecture_names_accepted_without_edits():
    for arch in ("MiniMaxText01ForCausalLM", "MiniMaxForCausalLM"):
        assert ModelConfig.from_dict({**REAL_M1, "architectures": [arch]}).num_layers == 80


def test_hf_config_keys(tiny_hf):
    cfg = ModelConfig.from_dir(tiny_hf)
    raw = json.loads((tiny_hf / "config.json").read_text())
    assert "layer_types" in raw and "attn_type_list" not in raw
    assert cfg.rotary_dim == 16 and cfg.full_alpha == raw["full_attn_alpha_factor"]
    assert cfg.softmax_layers == [3, 7]


@pytest.mark.parametrize("change, field", [
    ({"architectures": ["LlamaForCausalLM"]}, "architectures"),
    ({"hidden_size": None}, "hidden_size"),
    ({"attn_type_list": [0] * 79}, "attn_type_list"),
    ({"attn_type_list": [2] * 80}, "attn_type_list"),
    ({"num_key_value_heads": 7}, "num_key_value_heads"),
    ({"rotary_dim": 200}, "rotary_dim"),
    ({"postnorm": False}, "postnorm"),
])
def test_bad_config_names_the_field(change, field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig.from_dict({**REAL_M1, **change})


def copy_ckpt(src, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def edit_shard(ckpt, edit):
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    file = index["weight_map"]["model.layers.0.self_attn.qkv_proj.weight"]
    tensors = load_file(str(ckpt / file))
    edit(tensors)
    save_file(tensors, str(ckpt / file))
    return file


def test_missing_tensor_is_named(tiny_official, tmp_path):
    ckpt = copy_ckpt(tiny_official, tmp_path)
    edit_shard(ckpt, lambda t: t.pop("model.layers.0.self_attn.qkv_proj.weight"))
    with pytest.raises(Exception, match="qkv_proj"):
        LLM(str(ckpt), device="cpu")


def test_misshaped_tensor_names_tensor_and_file(tiny_official, tmp_path):
    ckpt = copy_ckpt(tiny_official, tmp_path)
    file = edit_shard(ckpt, lambda t: t.update({"model.layers.0.self_attn.qkv_proj.weight": torch.zeros(3, 3)}))
    with pytest.raises(WeightError, match=rf"qkv_proj.weight' in {file}.*shape \(3, 3\)"):
        LLM(str(ckpt), device="cpu")


def test_unexpected_tensor_is_named(tiny_official, tmp_path):
    ckpt = copy_ckpt(tiny_official, tmp_path)
    index_path = ckpt / "model.safetensors.index.json"
    file = edit_shard(ckpt, lambda t: t.update({"model.layers.0.mystery.weight": torch.zeros(2)}))
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.layers.0.mystery.weight"] = file
    index_path.write_text(json.dumps(index))
    with pytest.raises(WeightError, match="mystery.weight.*unexpected"):
        LLM(str(ckpt), device="cpu")


def test_missing_shard_file_is_named(tiny_official, tmp_path):
    ckpt = copy_ckpt(tiny_official, tmp_path)
    (ckpt / "model-00002-of-00004.safetensors").unlink()
    with pytest.raises(WeightError, match="model-00002-of-00004.safetensors"):
        LLM(str(ckpt), device="cpu")


def test_shards_are_numbered_from_zero(tiny_official):
    names = set(json.loads((tiny_official / "model.safetensors.index.json").read_text())["weight_map"].values())
    assert "model-00000-of-00004.safetensors" in names and "model-00004-of-00004.safetensors" not in names


def test_router_gate_stored_fp32_and_kept_fp32(tiny_official):
    llm = LLM(str(tiny_official), device="cpu", dtype="bfloat16")
    assert llm.model.model.layers[0].block_sparse_moe.gate.weight.dtype == torch.float32
    assert llm.model.model.layers[0].self_attn.qkv_proj.weight.dtype == torch.bfloat16
    # the LM head keeps the checkpoint's bf16 weights (no fp32 copy) and computes fp32 logits from fp32 activations
    head = llm.model.lm_head
    assert head.weight.dtype == torch.bfloat16
    h = torch.randn(3, head.weight.shape[1])
    logits = head(h)
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, (h.double() @ head.weight.double().t())[:, :logits.shape[1]].float(),
                          rtol=1e-5, atol=1e-5)


def test_wrong_model_path():
    with pytest.raises(FileNotFoundError, match="no/such/dir"):
        LLM("no/such/dir")


def test_unsupported_arguments_raise(tiny_official):
    with pytest.raises(ValueError, match="tensor_parallel_size=4"):
        LLM(str(tiny_official), device="cpu", tensor_parallel_size=4)  # 6 heads
    with pytest.raises(ValueError, match="quantization='fp8'"):
        LLM(str(tiny_official), device="cpu", quantization="fp8")


def test_prompt_over_the_window(tiny_official):
    llm = LLM(str(tiny_official), device="cpu", max_model_len=64)
    with pytest.raises(ValueError, match="over by 37"):
        llm.generate(prompt_token_ids=[5] * 100)
