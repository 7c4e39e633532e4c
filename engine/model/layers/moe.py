"""M1's sparse MoE block: fp32 softmax router -> top-k -> renormalise; SiLU-gated experts stored stacked.

Experts live in two stacked parameters, w13 [E, 2I, H] (w1 rows then w3 rows, as the -hf `gate_up_proj`) and
w2 [E, H, I]; the official per-expert tensors load into slices of them. Tensor parallel: each rank keeps the
intermediate rows [r*I/N, (r+1)*I/N) of both w1 and w3 and the same columns of w2, so its output is a partial sum:
one all-reduce. With `quantization="experts_int8"` w13/w2 are int8 with fp32 per-row scales (engine/model/quant.py), run
by the Triton fused MoE on CUDA (kernels/moe; `M1_MOE_IMPL=torch|triton` overrides the choice).
"""
import os

import torch
from torch import nn

from kernels.fused import router_topk
from kernels.moe import fused_moe

from ..tp_group import TPGroup
from ..quant import EXPERTS_INT8, quantize_rows
from .param import Source, make_param, put


TRITON_MAX_BF16_TOKENS = 512


class SparseMoE(nn.Module):
    def __init__(self, cfg, dtype: torch.dtype, device=None, tp: TPGroup | None = None, quantization=None):
        super().__init__()
        self.tp = tp = tp or TPGroup()
        E, H, I = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size
        self.first, self.local = tp.split(I, "intermediate_size")
        self.top_k, self.intermediate, self.hidden = cfg.top_k, I, H
        self.quantized = quantization == EXPERTS_INT8
        wdtype = torch.int8 if self.quantized else dtype
        self.gate = nn.Module()
        self.gate.weight = make_param((E, H), torch.float32, device)
        self.w13 = make_param((E, 2 * self.local, H), wdtype, device, self._load_w13)
        self.w2 = make_param((E, H, self.local), wdtype, device, self._load_w2)
        if self.quantized:
            self.w13_scale = make_param((E, 2 * self.local), torch.float32, device, self._load_w13_scale)
            self.w2_scale = make_param((E, H), torch.float32, device, self._load_w2_scale)
        self.on_cuda = torch.device(device or "cpu").type == "cuda"
        self.impl = os.environ.get("M1_MOE_IMPL")  # None: chosen per call (see _impl)
        self.fused_router = False  # softmax + top-k + renormalise in one launch (kernels/fused)

    # --- loading: (kind, expert) shard ids; kinds w1/w3/w2 per expert, gate_up/down for all experts -----------
    def _rows(self, base: int = 0) -> slice:
        """The intermediate rows this rank owns, in a tensor whose w1 (or w3) block starts at row `base`."""
        return slice(base + self.first, base + self.first + self.local)

    def _w13_targets(self, kind: str, e):
        """(index into w13 / its scale, source row slice) pairs for one shard id."""
        n = self.local
        if kind == "gate_up":  # -hf [E, 2I, H]: w1 rows then w3 rows
            return [((slice(None), slice(0, n)), self._rows()),
                    ((slice(None), slice(n, 2 * n)), self._rows(self.intermediate))]
        return [((e, slice(0, n) if kind == "w1" else slice(n, 2 * n)), self._rows())]

    def _load_w13(self, param, src: Source, shard) -> None:
        kind, e = shard
        lead = (slice(None),) if kind == "gate_up" else ()
        for target, rows in self._w13_targets(kind, e):
            self._store(param, target, src, src.read(*lead, rows), "w13_scale")

    def _load_w2(self, param, src: Source, shard) -> None:
        kind, e = shard
        cols = slice(self.first, self.first + self.local)
        if kind == "down":
            self._store(param, (slice(None),), src, src.read(slice(None), slice(None), cols), "w2_scale")
        else:
            self._store(param, (e,), src, src.read(slice(None), cols), "w2_scale")

    def _store(self, param, target: tuple, src: Source, data: torch.Tensor, scale_name: str) -> None:
        """Put `data` at `param[target]`, quantizing it (and filling the matching scale rows) when int8 is asked."""
        if self.quantized and data.dtype != torch.int8:
            data, scale = quantize_rows(data)
            scale_param = getattr(self, scale_name)
            put(scale_param, scale_param.data[target], src, scale)
        elif data.dtype == torch.int8 and not self.quantized:
            raise src.fail("is stored int8; load it with quantization='experts_int8'")
        put(param, param.data[target], src, data)

    def _load_w13_scale(self, param, src: Source, shard) -> None:
        kind, e = shard
        lead = (slice(None),) if kind == "gate_up" else ()
        for target, rows in self._w13_targets(kind, e):
            put(param, param.data[target], src, src.read(*lead, rows).float())

    def _load_w2_scale(self, param, src: Source, shard) -> None:
        kind, e = shard
        put(param, param.data if kind == "down" else param.data[e], src, src.read().float())

    # --- forward ------------------------------------------------------------------------------------------------
    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, H] -> (weights [T, k] in x.dtype, expert ids [T, k])."""
        if self.fused_router:
            return router_topk(x.float() @ self.gate.weight.t(), self.top_k, x.dtype)
        probs = torch.softmax(x.float() @ self.gate.weight.t(), dim=-1)
        weights, ids = probs.topk(self.top_k, dim=-1)
        return (weights / weights.sum(-1, keepdim=True)).to(x.dtype), ids

    def _impl(self, num_tokens: int) -> str:
        """Triton on CUDA for int8 experts and for decode-sized bf16 batches (one weight-streaming launch instead of
        a loop over experts: 111 -> 160 tok/s at batch 1 on an H100); cuBLAS per expert for long bf16 chunks, where
        it beat our grouped GEMM (92k vs 65k tok/s at 128k). The CPU runs the PyTorch reference."""
        if self.impl:
            return self.impl
        if not self.on_cuda:
            return "torch"
        return "triton" if self.quantized or num_tokens <= TRITON_MAX_BF16_TOKENS else "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, ids = self.route(x)
        scales = (self.w13_scale, self.w2_scale) if self.quantized else (None, None)
        out = fused_moe(x, self.w13, self.w2, weights, ids, *scales, impl=self._impl(x.shape[0]))
        return self.tp.all_reduce(out)
