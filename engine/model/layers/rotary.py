"""Partial NeoX RoPE: only the first `rotary_dim` dims of each head rotate; cos/sin made per step, never tabled."""
import torch


class PartialRotary:
    def __init__(self, rotary_dim: int, theta: float):
        self.rotary_dim = rotary_dim
        self.inv_freq = 1.0 / theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim)
        self._on_device: dict[torch.device, torch.Tensor] = {}  # no host-to-device copy per step (graph capture)

    def freqs_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._on_device:
            self._on_device[device] = self.inv_freq.to(device)
        return self._on_device[device]

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [T] -> cos, sin [T, 1, rotary_dim] in fp32."""
        freqs = positions.float()[:, None] * self.freqs_on(positions.device)[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)[:, None, :]
        return emb.cos(), emb.sin()

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [T, heads, head_dim]: rotate dims [0, rotary_dim) with rotate-half pairing, pass the rest through."""
        r = self.rotary_dim
        rot, rest = x[..., :r].float(), x[..., r:]
        half = r // 2
        rotated = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
        out = (rot * cos + rotated * sin).to(x.dtype)
        return torch.cat([out, rest], dim=-1)
