"""Paged decode attention (Triton, flash-decoding) against the fp32 PyTorch loop, through Triton's interpreter.

Ragged context lengths over shuffled (non-contiguous) blocks, GQA ratios 1/4/8, one block and many, 0-length
padding rows, block sizes 16/64 and non-16 ones, the single-pass path and split contexts (including more splits
than a sequence has tokens). Errors are relative norm errors; `pytest -s` prints them.
"""
import math
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from kernels.attention import paged_decode_attention, paged_decode_attention_ref  # noqa: E402

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def make(lens, H, KVH, D, block_size, dtype, seed=0, spare_blocks=3):
    """Caches with every sequence's blocks scattered over a shuffled pool; padded table entries are garbage."""
    g = torch.Generator().manual_seed(seed)
    need = [math.ceil(n / block_size) for n in lens]
    width = max(need + [1]) + 1
    pool = torch.randperm(sum(need) + spare_blocks, generator=g).int()
    tables = torch.randint(0, 10_000, (len(lens), width), generator=g, dtype=torch.int32)  # garbage past the end
    at = 0
    for n, b in enumerate(need):
        tables[n, :b] = pool[at:at + b]
        at += b
    rows = (sum(need) + spare_blocks) * block_size
    k = torch.randn(rows, KVH, D, generator=g).to(dtype)
    v = torch.randn(rows, KVH, D, generator=g).to(dtype)
    q = torch.randn(len(lens), H, D, generator=g).to(dtype)
    return q, k, v, tables, torch.tensor(lens, dtype=torch.int32)


def check(lens, H, KVH, D, block_size, dtype, num_splits, seed=0):
    q, k, v, tables, seq_lens = make(lens, H, KVH, D, block_size, dtype, seed)
    scale = D ** -0.5
    ref = paged_decode_attention_ref(q, k, v, tables, seq_lens, block_size, scale)
    out = torch.full_like(q, float("nan"))
    got = paged_decode_attention(q, k, v, tables, seq_lens, block_size, scale, num_splits=num_splits, out=out)
    assert got is out and out.dtype == dtype and not out.isnan().any()
    err = rel_err(out, ref)
    print(f"lens={lens} H={H} KVH={KVH} D={D} bs={block_size} {dtype} splits={num_splits}: rel err {err:.2e}")
    assert err <= TOL[dtype], err
    for n, length in enumerate(lens):
        if length == 0:
            assert (out[n] == 0).all()
    return out


CASES = [  # lens, H, KVH, D, block_size
    ([5, 130, 1, 77], 8, 8, 32, 16),       # GQA 1, one block and many, a 1-token context
    ([200, 0, 64, 333], 8, 2, 16, 16),     # GQA 4, a padding row
    ([97, 260, 0, 31], 16, 2, 64, 32),     # GQA 8
    ([150, 40, 301], 4, 1, 32, 8),         # block size under BLOCK_N
    ([129, 7, 400], 8, 1, 16, 128),        # block size over BLOCK_N
    ([45, 120, 99], 8, 2, 32, 24),         # a block size that is not a power of two
]


@pytest.mark.parametrize("num_splits", [1, 3, 8], ids=["single", "split3", "split8"])
@pytest.mark.parametrize("lens,H,KVH,D,block_size", CASES, ids=[f"c{i}" for i in range(len(CASES))])
def test_matches_reference_fp32(lens, H, KVH, D, block_size, num_splits):
    check(lens, H, KVH, D, block_size, torch.float32, num_splits)


@pytest.mark.parametrize("num_splits", [1, 4])
def test_bf16_gqa8(num_splits):
    check([300, 1, 65, 0], 16, 2, 64, 16, torch.bfloat16, num_splits, seed=3)


def test_more_splits_than_tokens_and_default_choice():
    check([3, 70], 8, 2, 16, 16, torch.float32, num_splits=40)
    q, k, v, tables, seq_lens = make([700, 20], 8, 2, 16, 16, torch.float32, seed=5)
    ref = paged_decode_attention_ref(q, k, v, tables, seq_lens, 16, 0.25)
    for hint in (None, 700, 64):  # the hint only changes how the context is split, never the result
        out = paged_decode_attention(q, k, v, tables, seq_lens, 16, 0.25, max_seq_len=hint)
        assert rel_err(out, ref) <= 1e-5


def test_all_rows_padding_gives_zeros():
    q, k, v, tables, seq_lens = make([0, 0], 4, 4, 16, 16, torch.float32)
    for splits in (1, 2):
        out = paged_decode_attention(q, k, v, tables, seq_lens, 16, 0.25, num_splits=splits)
        assert (out == 0).all()


def test_bad_arguments_are_named():
    q, k, v, tables, seq_lens = make([5], 6, 4, 16, 16, torch.float32)
    with pytest.raises(ValueError, match="multiple of kv heads"):
        paged_decode_attention(q, k, v, tables, seq_lens, 16, 0.25)
    q, k, v, tables, seq_lens = make([5], 8, 4, 16, 16, torch.float32)
    with pytest.raises(ValueError, match="block_tables must be int32"):
        paged_decode_attention(q, k, v, tables.long(), seq_lens, 16, 0.25)
    with pytest.raises(ValueError, match="seq_lens"):
        paged_decode_attention(q, k, v, tables, seq_lens[:0], 16, 0.25)
