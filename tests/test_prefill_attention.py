"""Triton paged chunked-prefill attention against its PyTorch reference, through Triton's interpreter on CPU.

Covers several sequences in one launch, ragged contexts, chunk starts not aligned to cache blocks or key tiles,
GQA groups 1/4/8, cache block sizes smaller than, equal to and larger than a key tile (shuffled block tables), a chunk
that is the whole context, a short chunk at the end of a long prefix, head dims 16-128, fp32/bf16/fp16.
"""
import pytest
import torch

from kernels.attention import paged_prefill_attention, paged_prefill_attention_ref
from kernels.attention.naive_prefill import attend_one

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def make(chunks, contexts, H, KVH, D, block_size, dtype, seed=0):
    """Packed q for `chunks` new queries at the end of `contexts`; K/V written at shuffled cache blocks."""
    g = torch.Generator().manual_seed(seed)
    blocks_per = [-(-L // block_size) for L in contexts]
    num_blocks = sum(blocks_per) + 3
    perm = torch.randperm(num_blocks, generator=g)
    width = max(blocks_per)
    tables = torch.full((len(contexts), width), num_blocks + 7, dtype=torch.int32)  # unused entries out of range
    used = 0
    for b, nb in enumerate(blocks_per):
        tables[b, :nb] = perm[used:used + nb].to(torch.int32)
        used += nb
    rows = num_blocks * block_size
    k_cache = torch.randn(rows, KVH, D, generator=g).to(dtype)
    v_cache = torch.randn(rows, KVH, D, generator=g).to(dtype)
    q = (torch.randn(sum(chunks), H, D, generator=g) * 1.5).to(dtype)
    cu = torch.tensor([0] + chunks, dtype=torch.int32).cumsum(0).to(torch.int32)
    lens = torch.tensor(contexts, dtype=torch.int32)
    return q, k_cache, v_cache, tables, cu, lens, block_size, D ** -0.5


def check(args, dtype, **kw):
    ref = paged_prefill_attention_ref(*args)
    out = paged_prefill_attention(*args, out=torch.full_like(args[0], float("nan")), **kw)
    assert out.dtype == dtype and not out.isnan().any()
    err = rel_err(out, ref)
    assert err <= TOL[dtype], err
    return err


@pytest.mark.parametrize("group", [1, 4, 8], ids=lambda g: f"gqa{g}")
@pytest.mark.parametrize("block_size", [4, 16, 32], ids=lambda b: f"bs{b}")
def test_ragged_sequences_gqa_and_block_sizes(group, block_size):
    # whole context, a chunk starting mid-block, a short chunk at the end of a longer prefix, one query
    kvh = 1 if group == 8 else 2  # keeps the interpreter's program count down
    args = make([37, 21, 5, 1], [37, 50, 69, 23], H=kvh * group, KVH=kvh, D=32, block_size=block_size,
                dtype=torch.float32, seed=group * 100 + block_size)
    check(args, torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_inputs_match_fp32_math(dtype):
    check(make([24, 9], [24, 61], H=8, KVH=2, D=64, block_size=16, dtype=dtype, seed=3), dtype)


@pytest.mark.parametrize("D", [16, 128])
def test_head_dims(D):
    check(make([19], [45], H=4, KVH=1, D=D, block_size=8, dtype=torch.float32, seed=D), torch.float32)


def test_short_chunk_at_end_of_long_prefix_with_big_tiles():
    # tiles of 32 queries x 16 keys: several unmasked tiles, then the diagonal split over two key tiles
    args = make([3, 40], [300, 217], H=4, KVH=2, D=16, block_size=64, dtype=torch.float32, seed=9)
    check(args, torch.float32, tiles=(32, 16, 1, 1))


def test_matches_per_sequence_sdpa_lower_right():
    from torch.nn.attention.bias import causal_lower_right
    import torch.nn.functional as F
    q, k, v, tables, cu, lens, bs, scale = make([11], [29], H=4, KVH=4, D=16, block_size=8,
                                                dtype=torch.float32, seed=5)
    rows = (tables[0].long()[torch.arange(29) // bs] * bs + torch.arange(29) % bs)
    sdpa = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k[rows].transpose(0, 1)[None],
                                          v[rows].transpose(0, 1)[None], attn_mask=causal_lower_right(11, 29),
                                          scale=scale)[0].transpose(0, 1)
    assert rel_err(attend_one(q, k[rows], v[rows], scale), sdpa) <= 1e-6
    assert rel_err(paged_prefill_attention(q, k, v, tables, cu, lens, bs, scale), sdpa) <= 1e-5


def test_empty_sequence_in_batch_and_bad_shapes():
    args = list(make([0, 7], [5, 12], H=2, KVH=1, D=16, block_size=4, dtype=torch.float32, seed=2))
    check(tuple(args), torch.float32)
    with pytest.raises(ValueError, match="multiple of KVH"):
        paged_prefill_attention(args[0], *[a.expand(-1, 3, -1) for a in args[1:3]], *args[3:6], 4, 0.25)
    with pytest.raises(ValueError, match="power of two"):
        paged_prefill_attention(*args[:6], 6, 0.25)


@pytest.mark.parametrize("variant, block_size", [("fold", 16), ("tma+tmaq", 16), ("tma+tmaq+ws+fold", 32),
                                                 ("tma+tmaq+fold+poly", 4), ("poly", 16)], ids=lambda v: str(v))
def test_kernel_variants_match_reference(variant, block_size):
    """Each variant of prefill.VARIANT_FLAGS against the reference: chunks of whole query blocks (TMA output stores)
    and ragged ones (masked stores), contexts ending mid key tile, GQA; cache blocks of 16 / 32 rows hold whole key
    tiles (TMA K/V loads), blocks of 4 rows do not (pointer loads instead)."""
    from kernels.attention import prefill
    assert prefill.variant_flags(variant, torch.empty(1, 4, 32), torch.empty(8, 2, 32), block_size, 8)["TMA_KV"] \
        == ("tma" in variant and block_size >= 8)
    args = make([32, 21, 3], [45, 50, 69], H=4, KVH=2, D=32, block_size=block_size, dtype=torch.float32,
                seed=len(variant) + block_size)
    check(args, torch.float32, variant=variant)
    bf16 = make([16, 7], [40, 23], H=2, KVH=1, D=32, block_size=block_size, dtype=torch.bfloat16, seed=4)
    check(bf16, torch.bfloat16, variant=variant)


def test_unknown_variant_is_named():
    args = make([4], [9], H=2, KVH=1, D=16, block_size=4, dtype=torch.float32)
    with pytest.raises(ValueError, match="unknown prefill variant"):
        paged_prefill_attention(*args, variant="tma+fast")


def test_tma_variant_falls_back_on_unaligned_cache():
    """A cache view that TMA cannot address (base not 16-byte aligned) takes the pointer loads and stays correct."""
    q, k, v, tables, cu, lens, bs, scale = make([9, 4], [30, 17], H=2, KVH=1, D=16, block_size=8,
                                                dtype=torch.float32, seed=8)
    k_off, v_off = (torch.cat([torch.zeros(1), t.flatten()])[1:].view(t.shape) for t in (k, v))
    assert k_off.data_ptr() % 16 and torch.equal(k_off, k)
    check((q, k_off, v_off, tables, cu, lens, bs, scale), torch.float32, variant="tma+tmaq")
