"""Per-head decay rates of M1's lightning attention: the one formula every path shares."""
import math

import torch


def base_slopes(num_heads: int) -> list[float]:
    """ALiBi slopes as MiniMax builds them (`_build_slope_tensor`); for 64 heads s_h = 2^(-(h+1)/8)."""
    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_2(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_2(closest) + base_slopes(2 * closest)[0::2][: num_heads - closest]


def layer_slopes(num_heads: int, layer_idx: int, num_layers: int) -> torch.Tensor:
    """Decay s_{l,h} = s_h * (1 - l/(L-1) + 1e-5) for global layer index l (softmax layers counted), fp32 [H]."""
    factor = 1 - layer_idx / max(num_layers - 1, 1) + 1e-5
    return torch.tensor(base_slopes(num_heads), dtype=torch.float32) * factor
