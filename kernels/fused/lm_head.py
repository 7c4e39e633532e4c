"""LM head from bf16 weights with fp32 activations and fp32 accumulation: the fp32 head's math at half the bytes.

The fp32 hidden states are split exactly into three bf16 pieces (h = h1 + h2 + h3: 8 + 8 + 8 significant bits
cover fp32's 24), so every product w * h_i is exact in fp32 and one cuBLAS bf16 GEMM with fp32 output
(`torch.mm(..., out_dtype=torch.float32)`) over the stacked [3T, H] pieces reads the weights once. The three
partial logits are summed in fp32: the result is fp32(w) . h with fp32 accumulation, up to summation order.
Off CUDA (or where mm has no out_dtype) it multiplies an fp32 copy, the reference.
"""
import torch


def split_bf16(h: torch.Tensor) -> torch.Tensor:
    """fp32 [T, H] -> bf16 [3, T, H] whose fp32 sum is exactly h (for |h| above bf16's smallest normal)."""
    hi = h.to(torch.bfloat16)
    rest = h - hi.float()
    mid = rest.to(torch.bfloat16)
    lo = (rest - mid.float()).to(torch.bfloat16)
    return torch.stack([hi, mid, lo])


def lm_head_logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """hidden [T, H] (any float dtype; used as fp32), weight [V, H] bf16 -> fp32 logits [T, V]."""
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden [T, H] and weight [V, H] must share H, got {tuple(hidden.shape)}, "
                         f"{tuple(weight.shape)}")
    if weight.dtype != torch.bfloat16:
        raise ValueError(f"weight must be bf16, got {weight.dtype}")
    h = hidden.float()
    if not h.is_cuda:
        return h @ weight.float().t()
    T = h.shape[0]
    parts = torch.mm(split_bf16(h).view(3 * T, -1), weight.t(), out_dtype=torch.float32).view(3, T, -1)
    return (parts[0] + parts[1]) + parts[2]
