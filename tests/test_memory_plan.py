"""Memory plan for the real M1 config (pure arithmetic): weights per GPU at TP8/TP4, KV and state, refusals."""
import pytest
import torch

from engine.model.config import ModelConfig
from engine.model.memory_plan import ACTIVATION_RESERVE, GB, MemoryPlanError, plan_memory
from engine.model.prefill_chunk import PREFILL_CHUNK_TOKENS
from engine.model.model import MiniMaxM1
from engine.model.tp_group import TPGroup
from tests.test_loading import REAL_M1

H100 = 85_520_809_984   # torch.cuda.mem_get_info total of an 80 GB H100
H200 = 150_754_820_096  # ... of a 141 GB H200


@pytest.fixture(scope="module")
def m1():
    return ModelConfig.from_dict(REAL_M1)


def test_int8_weights_per_gpu_match_perf_notes(m1):
    tp8 = plan_memory(m1, 8, "experts_int8", gpu_bytes=H100)
    tp4 = plan_memory(m1, 4, "experts_int8", gpu_bytes=H200)
    # PERF.md: 477 GB in all with int8 experts -> 59.7 GB/GPU at TP8, 119 at TP4; the LM head stays bf16 (fp32 math)
    assert tp8.weight_bytes / GB == pytest.approx(59.7, rel=0.01)
    assert tp4.weight_bytes / GB == pytest.approx(119.4, rel=0.01)
    assert tp8.weights["experts"] / GB == pytest.approx(434.88 / 8, rel=0.002)  # + fp32 row scales
    assert tp8.kv_bytes_per_token == 10 * 2 * 1 * 128 * 2 and tp4.kv_bytes_per_token == 10 * 2 * 2 * 128 * 2
    assert tp8.state_bytes_per_seq == 70 * 8 * 128 * 128 * 4
    assert tp8.sessions(1 << 20) == 2 and tp4.sessions(1 << 20) == 1
    text = tp8.describe()
    assert "weights per GPU: 59.81 GB" in text and "2 of 1M tokens" in text
    assert tp8.weights["lm_head"] == tp8.weights["embedding"]  # bf16 head: as many bytes as the embedding


def test_graphs_and_long_prefill_are_in_the_plan(m1):
    eager = plan_memory(m1, 8, "experts_int8", gpu_bytes=H200)
    graphs = plan_memory(m1, 8, "experts_int8", gpu_bytes=H200, cuda_graphs=True, prefill_chunk=16384)
    same_chunk = plan_memory(m1, 8, "experts_int8", gpu_bytes=H200, prefill_chunk=16384)
    assert graphs.cache_budget == same_chunk.cache_budget - graphs.graph_bytes and graphs.graph_bytes > 0
    # the window (1M tokens): weights + 1M x KV + one state + one chunk's activations, more with a larger chunk
    assert eager.prefill_peak() == eager.weight_bytes + (1 << 20) * eager.kv_bytes_per_token \
        + eager.state_bytes_per_seq + PREFILL_CHUNK_TOKENS * eager.activation_bytes_per_token
    assert graphs.prefill_peak() > eager.prefill_peak() + graphs.graph_bytes
    assert "prefill of the window (1,048,576 tokens): peak 68.5 GB/GPU (weights 59.81, kv 5.37, states 0.04, " \
           "graphs 1.07, activations 2.24; 16384-token chunks)" in graphs.describe()
    short = plan_memory(m1, 8, "experts_int8", gpu_bytes=H200, max_model_len=131072)
    assert short.prefill_peak() == short.prefill_peak(131072) < eager.prefill_peak() == short.prefill_peak(1 << 20)


def test_activations_per_token_by_hand(m1):
    # MoE peak, TP1: x, residual, h [6144] bf16 + 2 slots x (gate/up 18432 + SiLU*up 9216 bf16 + down 6144 fp32)
    # + the fp32 sum and its bf16 cast [6144] + 32 fp32 router probabilities
    tp1 = 3 * 6144 * 2 + 2 * (3 * 9216 * 2 + 4 * 6144) + 6144 * 6 + 32 * 4
    assert plan_memory(m1, 1, "experts_int8").activation_bytes_per_token == tp1 == 233_600
    tp8 = 3 * 6144 * 2 + 2 * (3 * 1152 * 2 + 4 * 6144) + 6144 * 6 + 32 * 4
    assert plan_memory(m1, 8, "experts_int8").activation_bytes_per_token == tp8
    # the lightning layer's (2*6144*2 + 8192*18 = 172,032 at TP1) is smaller than the MoE's at every TP
    one_chunk = plan_memory(m1, 1, "experts_int8", prefill_chunk=16384)
    assert one_chunk.prefill_parts(1 << 20)["activations"] == 16384 * 233_600  # 3.83 GB: the H200 run left 3.8-4.1


def test_a_large_chunk_reserves_its_activations_before_the_kv_cache(m1):
    small = plan_memory(m1, 8, "experts_int8", gpu_bytes=H200, prefill_chunk=4096)
    large = plan_memory(m1, 8, "experts_int8", gpu_bytes=H200, prefill_chunk=65536)
    assert small.activation_reserve == ACTIVATION_RESERVE  # 4096 x 137 KB < 2 GiB: the floor
    assert large.activation_reserve == 65536 * large.activation_bytes_per_token > ACTIVATION_RESERVE
    assert small.cache_budget - large.cache_budget == large.activation_reserve - ACTIVATION_RESERVE


def test_plan_matches_the_parameters_the_engine_builds(m1):
    for tp in (4, 8):
        model = MiniMaxM1(m1, torch.bfloat16, device="meta", tp=TPGroup(0, tp), quantization="experts_int8")
        built = sum(p.numel() * p.element_size() for p in model.parameters())
        assert plan_memory(m1, tp, "experts_int8").weight_bytes == built


def test_refuses_what_cannot_fit(m1):
    with pytest.raises(MemoryPlanError, match=r"119\.5 GB of weights per GPU at tensor_parallel_size=4"):
        plan_memory(m1, 4, "experts_int8", gpu_bytes=H100).check()
    with pytest.raises(MemoryPlanError, match="experts_int8"):
        plan_memory(m1, 8, None, gpu_bytes=H100).check()
    with pytest.raises(MemoryPlanError, match="lower max_model_len"):
        plan_memory(m1, 8, "experts_int8", gpu_bytes=H100, max_model_len=4 << 20).check()
    plan_memory(m1, 8, "experts_int8", gpu_bytes=H100).check()
    plan_memory(m1, 4, "experts_int8", gpu_bytes=H200).check()


def test_tp_that_does_not_divide_heads_is_refused(m1):
    with pytest.raises(ValueError, match="tensor_parallel_size=3"):
        plan_memory(m1, 3, "experts_int8")
