"""Persistent device buffers of a step's inputs: token ids, positions, KV slot mapping, state slots, sequence
lengths, cu_seqlens and block tables.

`fill(items)` packs the step on the host (numpy, no torch op per sequence), sends it to the device in ONE
host-to-device copy (`non_blocking=True`: from pinned memory on CUDA, without waiting for the steps already queued,
so the host packs step i+1 while the GPU runs step i; False: from pageable memory, which makes torch wait for the
stream first: the reference), and spreads it into the buffers with a fixed number of device copies whatever the
batch size or layer count. With `pad_to=B` the batch is padded to B rows that read nothing and write nowhere (seq_len 0, state
slot -1, KV row = the cache's scratch row) and the context views the buffers' first B rows at full block-table
width: the same tensors every time, which is what a captured CUDA graph replays. Only the block-table columns the
step's sequences use are copied; entries past a sequence's length are never read.
"""
import numpy as np
import torch

from ..model.context import ForwardContext


class StepBuffers:
    def __init__(self, max_tokens: int, max_seqs: int, max_blocks: int, block_size: int, scratch_row: int,
                 max_seq_len: int, device):
        dev = self.device = torch.device(device)
        self.block_size, self.scratch_row, self.max_seq_len = block_size, scratch_row, max_seq_len
        self.ids = torch.zeros(max_tokens, dtype=torch.long, device=dev)
        self.positions = torch.zeros(max_tokens, dtype=torch.long, device=dev)
        self.slot_mapping = torch.full((max_tokens,), scratch_row, dtype=torch.long, device=dev)
        self.state_slots = torch.full((max_seqs,), -1, dtype=torch.long, device=dev)
        self.seq_lens = torch.zeros(max_seqs, dtype=torch.int32, device=dev)
        self.cu_seqlens = torch.zeros(max_seqs + 1, dtype=torch.int32, device=dev)
        self.block_tables = torch.zeros(max_seqs, max_blocks, dtype=torch.int32, device=dev)

    @property
    def capacity(self) -> tuple[int, int, int]:
        """(tokens, sequences, block-table width) these buffers hold."""
        return self.ids.numel(), self.state_slots.numel(), self.block_tables.shape[1]

    def fits(self, items, pad_to: int | None = None) -> bool:
        tokens, seqs, width = self.capacity
        n = max(len(items), pad_to or 0)
        return (sum(len(it.new_tokens) for it in items) + n - len(items) <= tokens and n <= seqs
                and max(len(it.block_table) for it in items) <= width)

    def pack(self, items, pad_to: int | None = None) -> dict:
        """The step on the host: {field: int64 array}, padded to `pad_to` sequences."""
        bs, pad = self.block_size, (pad_to or len(items)) - len(items)
        lens = [len(it.new_tokens) for it in items] + [1] * pad
        width = max([len(it.block_table) for it in items] + [1])  # a graph's view is wider; the rest is never read
        table = np.zeros((len(lens), width), dtype=np.int64)
        positions, rows = [], []
        for i, it in enumerate(items):
            bt = np.asarray(it.block_table, dtype=np.int64)
            table[i, :len(bt)] = bt
            t = np.arange(it.past_len, it.past_len + len(it.new_tokens))
            positions.append(t)
            rows.append(bt[t // bs] * bs + t % bs)
        ids = [t for it in items for t in it.new_tokens] + [0] * pad
        return {"ids": np.asarray(ids, dtype=np.int64),
                "positions": np.concatenate(positions + [np.zeros(pad, dtype=np.int64)]),
                "slot_mapping": np.concatenate(rows + [np.full(pad, self.scratch_row, dtype=np.int64)]),
                "state_slots": np.asarray([it.slot for it in items] + [-1] * pad, dtype=np.int64),
                "seq_lens": np.asarray([it.past_len + len(it.new_tokens) for it in items] + [0] * pad, dtype=np.int64),
                "cu_seqlens": np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                "block_tables": table}

    def fill(self, items, pad_to: int | None = None, non_blocking: bool = False) -> tuple[torch.Tensor, ForwardContext]:
        """Copy the step into the buffers; (token ids [T], context), both views of the buffers. The buffers are
        written in stream order: a step still running on the device reads its own inputs, not these."""
        host = self.pack(items, pad_to)
        parts = [a.ravel() for a in host.values()]
        if non_blocking:  # torch's pinned-memory cache reuses this block only after the copy that reads it has run
            flat = torch.empty(sum(a.size for a in parts), dtype=torch.long, pin_memory=self.device.type == "cuda")
            np.concatenate(parts, out=flat.numpy())
        else:
            flat = torch.from_numpy(np.concatenate(parts))
        dev = flat.to(self.device, non_blocking=non_blocking)  # the step's one host-to-device copy
        T, N = host["ids"].size, host["state_slots"].size
        W = host["block_tables"].shape[1]
        offset = 0
        for name, a in host.items():
            buf = getattr(self, name)
            part = dev[offset:offset + a.size]
            offset += a.size
            if name == "block_tables":
                buf[:N, :W].copy_(part.view(N, W))
            else:
                buf[:a.size].copy_(part)
        seq_lens = host["seq_lens"].tolist()
        ctx = ForwardContext(
            positions=self.positions[:T], cu_seqlens=self.cu_seqlens[:N + 1], state_slots=self.state_slots[:N],
            slot_mapping=self.slot_mapping[:T], block_tables=self.block_tables[:N, :None if pad_to else W],
            seq_lens=self.seq_lens[:N],
            is_decode=T == N and all(it.past_len > 0 for it in items),
            bounds=host["cu_seqlens"].tolist(), seq_lens_host=seq_lens,
            max_seq_len=self.max_seq_len if pad_to else max(seq_lens), max_query_len=int(max(np.diff(host["cu_seqlens"]))),
            block_size=self.block_size)
        return self.ids[:T], ctx
