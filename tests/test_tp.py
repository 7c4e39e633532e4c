"""Tensor parallelism on CPU (gloo): TP=2 equals TP=1 on the tiny hybrid model (6 heads, 2 kv heads), both layouts;
greedy generation and state reuse through the engine; all-reduces per layer; each rank reads only its shard.

One TP=2 engine is alive at a time (one process group per process); `tp` swaps it when a test asks for another.
"""
import pytest
import torch
from safetensors import safe_open

from engine import LLM, SamplingParams
from engine.weights import checkpoint_files

GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


class TPEngines:
    """Keeps at most one TP engine alive: asking for another closes the previous one."""

    def __init__(self):
        self.key, self.llm = None, None

    def get(self, path, **kw) -> LLM:
        key = (str(path), tuple(sorted(kw.items())))
        if key != self.key:
            self.close()
            self.llm = LLM(str(path), device="cpu", dtype="float32", tensor_parallel_size=2, max_model_len=4096, **kw)
            self.key = key
        return self.llm

    def close(self):
        if self.llm is not None:
            self.llm.close()
        self.key, self.llm = None, None


@pytest.fixture(scope="module")
def tp():
    engines = TPEngines()
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
    from engine.runner import StepItem
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


def test_tp2_logits_equal_tp1_hf_layout(tp, tiny_hf, tiny_llm):
    prompt = ids(300, seed=3)
    assert rel(tp.get(tiny_hf).logits(prompt), tiny_llm.logits(prompt)) <= 1e-5


def test_tp_size_that_does_not_divide_the_heads_is_refused(tiny_official):
    with pytest.raises(ValueError, match="num_attention_heads=6 is not divisible by tensor_parallel_size=4"):
        LLM(str(tiny_official), device="cpu", tensor_parallel_size=4)
