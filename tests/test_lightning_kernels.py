"""Lightning-attention Triton kernels (prefill and decode) against the fp64 recurrence of kernels/lightning/naive.py.

Runs the Triton kernels on CPU tensors through Triton's interpreter. TRITON_INTERPRET is set here before triton is
imported, as CI does; the kernels also run without it (they avoid triton.language's own jit helpers, which are fixed
when triton is imported, and kernels/lightning/launch.py interprets kernel modules imported earlier), which
test_cpu_path_needs_no_interpret_variable checks in a fresh process. Errors are relative norm errors
||out - ref|| / ||ref||; `pytest -s` prints them.
"""
import os
import subprocess
import sys

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from kernels.lightning import layer_slopes, lightning_decode, lightning_prefill, naive  # noqa: E402
from kernels.lightning.chunk import chunk_prefill  # noqa: E402

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-3}
STATE_TOL = {torch.float32: 1e-5, torch.bfloat16: 5e-4}  # bf16: the default fp16 operands keep ~11 bits
LAYERS = {"layer0": 0, "layer78": 78}  # strongest and weakest decay of M1's lightning layers


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def slopes_for(H, layer):
    """H slopes spanning M1's 64 heads at `layer`: head 0 (fastest decay) to head 63 (slowest)."""
    return layer_slopes(64, layer, 80)[torch.linspace(0, 63, H).round().long()]


def inputs(T, H, D, dtype, seed):
    """SiLU-activated q, k, v like M1's layer, rounded to `dtype`."""
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.functional.silu(torch.randn(T, H, D, generator=g)).to(dtype) for _ in range(3)]


def check(name, got, ref, tol):
    err = rel_err(got, ref)
    print(f"{name}: rel err {err:.2e}")
    assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


CASES = [(1, 8, 16)] + [(T, 2, 16) for T in (63, 256, 257, 1000)] + [(T, 2, 32) for T in (63, 257)] + \
        [(257, 2, 64), (1, 1, 128), (130, 1, 128)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
@pytest.mark.parametrize("T,H,D", CASES, ids=[f"T{t}-H{h}-D{d}" for t, h, d in CASES])
def test_prefill_one_sequence_matches_recurrence(T, H, D, layer, dtype):
    q, k, v = inputs(T, H, D, dtype, seed=T + D)
    slopes = slopes_for(H, layer)
    init = torch.randn(1, H, D, D, generator=torch.Generator().manual_seed(1)) if T % 2 else None
    o, state = lightning_prefill(q, k, v, slopes, init, impl="triton")
    ref_o, ref_state = naive.recurrence(q, k, v, slopes, None if init is None else init[0])
    assert o.dtype == dtype and o.shape == (T, H, D) and state.dtype == torch.float32
    check(f"prefill T={T} D={D} layer={layer} {dtype}", o, ref_o, TOL[dtype])
    check("  final state", state[0], ref_state, STATE_TOL[dtype])


TUNINGS = {"auto": {}, "chunk128-bt32": {"chunk": 128, "block_t": 32},
           "chunk64-bt16-bv16": {"chunk": 64, "block_t": 16, "block_v": 16},
           "fp16-operands": {"operands": "fp16"}, "split-fp16-operands": {"operands": "split-fp16"}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("tuning", TUNINGS.values(), ids=TUNINGS.keys())
def test_prefill_varlen_with_initial_states(dtype, tuning):
    lens = [5, 0, 300, 64, 129, 1]
    H, D = 3, 32
    cu = torch.tensor([0] + lens).cumsum(0).to(torch.int32)
    q, k, v = inputs(int(cu[-1]), H, D, dtype, seed=7)
    slopes = torch.cat([slopes_for(2, 0), slopes_for(1, 78)])
    init = torch.randn(len(lens), H, D, D, generator=torch.Generator().manual_seed(3))
    o, states = chunk_prefill(q, k, v, slopes, init, cu, **tuning)
    for n, (lo, hi) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        ref_o, ref_state = naive.recurrence(q[lo:hi], k[lo:hi], v[lo:hi], slopes, init[n])
        if hi > lo:
            check(f"varlen seq {n} ({hi - lo} tokens) {dtype} {tuning}", o[lo:hi], ref_o, TOL[dtype])
        check(f"  seq {n} final state", states[n], ref_state, STATE_TOL[dtype])


@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
def test_prefill_bf16_operands_on_silu_data(layer):
    """The fast operand mode rounds S, P and V*decay to bf16 once: within 2e-3 for SiLU inputs and the states they
    build (positive mean), not for arbitrary zero-mean states, hence not the default."""
    lens = [400, 130]
    cu = torch.tensor([0] + lens).cumsum(0).to(torch.int32)
    q, k, v = inputs(int(cu[-1]), 2, 128, torch.bfloat16, seed=layer)
    slopes = slopes_for(2, layer)
    o, states = chunk_prefill(q, k, v, slopes, None, cu, operands="bf16")
    for n, (lo, hi) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        ref_o, ref_state = naive.recurrence(q[lo:hi], k[lo:hi], v[lo:hi], slopes)
        check(f"bf16 operands seq {n} layer {layer}", o[lo:hi], ref_o, TOL[torch.bfloat16])
        check("  final state", states[n], ref_state, 2e-3)


def test_prefill_reads_strided_views_of_interleaved_qkv():
    T, H, D = 200, 2, 32
    qkv = torch.nn.functional.silu(torch.randn(T, H * 3 * D)).to(torch.bfloat16)
    q, k, v = qkv.view(T, H, 3 * D).split(D, dim=-1)
    assert not q.is_contiguous()
    slopes = slopes_for(H, 0)
    o, state = lightning_prefill(q, k, v, slopes, impl="triton")
    ref_o, ref_state = naive.recurrence(q, k, v, slopes)
    check("strided qkv", o, ref_o, TOL[torch.bfloat16])
    check("  final state", state[0], ref_state, STATE_TOL[torch.bfloat16])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("D", [16, 128])
def test_decode_updates_pool_in_place_and_skips_padding(D, dtype):
    H, S = 2, 6
    slots = torch.tensor([3, -1, 0, 5, -1])
    g = torch.Generator().manual_seed(D)
    pool = torch.randn(S, H, D, D, generator=g)
    ref_pool = pool.clone()
    slopes = slopes_for(H, 0)
    q, k, v = inputs(len(slots), H, D, dtype, seed=D)
    o = lightning_decode(q, k, v, slopes, pool, slots, impl="triton")
    ref_o = naive.decode(q, k, v, slopes, ref_pool, slots)
    live = slots >= 0
    check(f"decode D={D} {dtype}", o[live], ref_o[live], TOL[dtype])
    check("  states", pool, ref_pool, 1e-6)
    assert (o[~live] == 0).all(), "padded rows must be zero"
    assert torch.equal(pool[[1, 2, 4]], ref_pool[[1, 2, 4]]), "slots not in the batch must stay untouched"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_prefill_then_decode_continues_the_recurrence(dtype):
    T, extra, H, D = 70, 4, 2, 32
    q, k, v = inputs(T + extra, H, D, dtype, seed=11)
    slopes = slopes_for(H, 78)
    o, state = lightning_prefill(q[:T], k[:T], v[:T], slopes, impl="triton")
    pool = torch.zeros(3, H, D, D)
    pool[2] = state[0]
    steps = [lightning_decode(q[t:t + 1], k[t:t + 1], v[t:t + 1], slopes, pool, torch.tensor([2]), impl="triton")
             for t in range(T, T + extra)]
    ref_o, ref_state = naive.recurrence(q, k, v, slopes)
    check(f"prefill+decode {dtype}", torch.cat([o] + steps), ref_o, TOL[dtype])
    check("  pooled state", pool[2], ref_state, STATE_TOL[dtype])


@pytest.mark.parametrize("block", [256, 64, 7])
@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
def test_naive_block_form_matches_recurrence(block, layer):
    q, k, v = inputs(300, 2, 16, torch.float64, seed=5)
    slopes = slopes_for(2, layer)
    init = torch.randn(2, 16, 16, dtype=torch.float64)
    o, state = naive.block_form(q, k, v, slopes, init, block=block, dtype=torch.float64)
    ref_o, ref_state = naive.recurrence(q, k, v, slopes, init)
    check(f"block form {block}", o, ref_o, 1e-12)
    check("  state", state, ref_state, 1e-12)


def test_bad_inputs_are_named():
    q = torch.randn(4, 2, 24)
    with pytest.raises(ValueError, match="head dim"):
        lightning_prefill(q, q, q, slopes_for(2, 0), impl="triton")
    with pytest.raises(ValueError, match="operands"):
        chunk_prefill(q[..., :16], q[..., :16], q[..., :16], slopes_for(2, 0), operands="fp8")
    with pytest.raises(ValueError, match="impl"):
        lightning_prefill(q, q, q, slopes_for(2, 0), impl="cuda")
    with pytest.raises(ValueError, match="state_pool"):
        x = torch.randn(1, 2, 16)
        lightning_decode(x, x, x, slopes_for(2, 0), torch.zeros(2, 2, 16, 16, dtype=torch.float64),
                         torch.tensor([0]), impl="triton")


def test_cpu_path_needs_no_interpret_variable():
    script = (
        "import torch, triton, triton.language\n"
        "from kernels.lightning import lightning_prefill, layer_slopes, naive\n"
        "q, k, v = (torch.nn.functional.silu(torch.randn(100, 2, 16)) for _ in range(3))\n"
        "s = layer_slopes(2, 0, 80)\n"
        "o, st = lightning_prefill(q, k, v, s, impl='triton')\n"
        "ref, _ = naive.recurrence(q, k, v, s)\n"
        "print(((o.double() - ref).norm() / ref.norm()).item())\n")
    env = {key: val for key, val in os.environ.items() if key != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < 1e-5
