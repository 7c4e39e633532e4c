"""Tensor parallelism on CPU (gloo): TP=2 equals TP=1 on the tiny hybrid model (6 heads, 2 kv heads), both layouts;
greedy generation and state reuse through the engine; all-reduces per layer; each rank reads only its shard.

One TP=2 engine is alive at a time (one process group per process); `tp` swaps it when a test asks for another.
"""
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from engine import LLM, SamplingParams
from engine.model.tiny import write_checkpoint
from engine.model.weights import checkpoint_files

GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


class TPEngines:
    """Keeps at most one TP engine alive: asking for another closes the previous one. Snapshots may go to disk."""

    def __init__(self, disk_dir):
        self.key, self.llm, self.disk_dir = None, None, str(disk_dir)

    def get(self, path) -> LLM:
        if str(path) != self.key:
            self.close()
            self.llm = LLM(str(path), device="cpu", dtype="float32", tensor_parallel_size=2, max_model_len=4096,
                           disk_state_bytes=1 << 30, disk_state_dir=self.disk_dir)
            self.key = str(path)
        return self.llm

    def close(self):
        if self.llm is not None:
            self.llm.close()
        self.key, self.llm = None, None


@pytest.fixture(scope="module")
def tp(tmp_path_factory):
    engines = TPEngines(tmp_path_factory.mktemp("tp_states"))
    yield engines
    engines.close()


def ids(n, seed=0, vocab=2000):
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_tp2_logits_equal_tp1_official(tp, tiny_official, tiny_llm):
    prompt = ids(700)  # crosses 256-token lightning blocks; two softmax layers
    err = rel(tp.get(tiny_official).logits(prompt), tiny_llm.logits(prompt))
    assert err <= 1e-5, err


def test_tp2_greedy_generation_equals_tp1(tp, tiny_official, tiny_llm):
    prompts = ["The quick brown fox", "Once upon a time, in a land far away", "x"]
    want = [o.outputs[0].token_ids for o in tiny_llm.generate(prompts, GREEDY)]
    got = [o.outputs[0].token_ids for o in tp.get(tiny_official).generate(prompts, GREEDY)]
    assert got == want and all(len(t) == GREEDY.max_tokens for t in got)


def test_two_all_reduces_per_layer_in_a_decode_step(tp, tiny_official):
    from engine.runtime.runner import StepItem
    llm = tp.get(tiny_official)
    blocks = list(range(4))
    llm.runner.run([StepItem(ids(40), 0, 0, blocks)])
    before = llm.engine.workers.call_all("num_all_reduces")
    llm.runner.run([StepItem([5], 40, 0, blocks)])
    after = llm.engine.workers.call_all("num_all_reduces")
    layers = llm.config.num_layers
    # embedding + per layer (attention output with the lightning norm's variance fused in, MoE output)
    assert [a - b for a, b in zip(after, before)] == [1 + 2 * layers] * 2


def test_each_rank_reads_only_its_shard(tp, tiny_official):
    llm = tp.get(tiny_official)
    size = {}
    for file, names in checkpoint_files(tiny_official).items():
        with safe_open(file, framework="pt") as f:
            for n in names:
                t = f.get_slice(n)
                size[n] = torch.Size(t.get_shape()).numel() * {"BF16": 2, "F32": 4}[t.get_dtype()]
    stats = llm.engine.workers.load_stats
    replicated = ("layernorm", "block_sparse_moe.gate.", "model.norm.")
    for rank_stats in stats:
        assert rank_stats["read"].keys() == size.keys()
        for name, nbytes in rank_stats["read"].items():
            if any(r in name for r in replicated):
                assert nbytes == size[name], name
            else:
                assert nbytes == size[name] // 2, f"{name}: rank read {nbytes} of {size[name]} bytes"
    on_disk = sum(size.values())
    assert all(0.5 * on_disk < r["bytes_read"] < 0.52 * on_disk for r in stats), [r["bytes_read"] for r in stats]


def test_state_reuse_under_tp(tp, tiny_official, tiny_llm):
    llm = tp.get(tiny_official)
    engine = llm.engine
    prompt = engine.tokenizer.encode_chat([{"role": "user", "content": "Tell me a story. " * 30}])
    want = tiny_llm.generate(prompt_token_ids=prompt, sampling_params=GREEDY)[0].outputs[0].token_ids
    first = llm.generate(prompt_token_ids=prompt, sampling_params=GREEDY)[0]
    again = llm.generate(prompt_token_ids=prompt, sampling_params=GREEDY)[0]
    assert first.outputs[0].token_ids == want == again.outputs[0].token_ids
    assert again.metrics["cached_tokens"] == len(prompt) - 1
    while engine.keeper.index.demote_lru("device"):  # every rank moves its shard to host memory
        pass
    assert {e.tier for e in engine.keeper.index.entries.values()} == {"host"}
    third = llm.generate(prompt_token_ids=prompt, sampling_params=GREEDY)[0]
    assert third.outputs[0].token_ids == want and third.metrics["cached_tokens"] == len(prompt) - 1
    while engine.keeper.index.demote_lru("device") or engine.keeper.index.demote_lru("host"):
        pass
    assert {e.tier for e in engine.keeper.index.entries.values()} == {"disk"}
    assert len(list(Path(tp.disk_dir).glob("snap-*.rank1.pt"))) == len(engine.keeper.index.entries)
    fourth = llm.generate(prompt_token_ids=prompt, sampling_params=GREEDY)[0]
    assert fourth.outputs[0].token_ids == want and fourth.metrics["cached_tokens"] == len(prompt) - 1


def test_tp2_logits_equal_tp1_hf_layout(tp, tiny_hf, tiny_llm):
    prompt = ids(300, seed=3)
    assert rel(tp.get(tiny_hf).logits(prompt), tiny_llm.logits(prompt)) <= 1e-5


def test_fewer_kv_heads_than_ranks_replicates_them(tp, tmp_path_factory):
    path = write_checkpoint(tmp_path_factory.mktemp("mqa"), seed=5, overrides=dict(num_attention_heads=4,
                                                                                   num_key_value_heads=1))
    single = LLM(str(path), device="cpu", dtype="float32")
    llm = tp.get(path)
    attn = llm.model.model.layers[3].self_attn
    assert attn.num_heads == 2 and attn.num_kv_heads == 1  # each rank: 2 of 4 q heads, the one kv head
    k_reads = [s["read"]["model.layers.3.self_attn.k_proj.weight"] for s in llm.engine.workers.load_stats]
    assert k_reads == [32 * 128 * 2] * 2  # the whole [32, 128] bf16 k_proj on both ranks
    prompt = ids(300, seed=4)
    assert rel(llm.logits(prompt), single.logits(prompt)) <= 1e-5


def test_vocab_shard_pads_the_last_rank():
    from engine.model.layers.embed_head import VocabParallelEmbedding
    from engine.model.layers.param import Source
    from engine.model.tp_group import TPGroup
    full = torch.arange(30.0).view(10, 3)
    shards = [VocabParallelEmbedding(10, 3, TPGroup(r, 3), torch.float32) for r in range(3)]
    for shard in shards:
        shard.weight.weight_loader(shard.weight, Source("emb", "f", (10, 3), full))
        assert shard.weight.loaded_numel == shard.weight.numel() == 12
    assert torch.equal(shards[2].weight[:2], full[8:]) and not shards[2].weight[2:].any()
    assert torch.equal(torch.cat([s.weight for s in shards])[:10], full)


def test_tp_size_that_does_not_divide_the_heads_is_refused(tiny_official):
    with pytest.raises(ValueError, match="num_attention_heads=6 is not divisible by tensor_parallel_size=4"):
        LLM(str(tiny_official), device="cpu", tensor_parallel_size=4)
