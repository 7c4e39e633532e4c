"""Reference lightning attention in plain PyTorch. This file is the spec the fast kernels are tested against.

Per head with decay s and state S in R^{D_k x D_v}:  S_t = exp(-s) S_{t-1} + k_t^T v_t ;  o_t = q_t S_t
(no softmax, no scaling, the state includes the current token). Shapes follow the package convention:
q, k, v [T, H, D] packed over sequences, cu_seqlens [N+1], states [N, H, D, D] fp32.
"""
import torch

BLOCK = 256


def recurrence(q, k, v, slopes, initial_state=None, dtype=torch.float64):
    """Token-by-token recurrence for one sequence: q,k,v [T,H,D] -> (o [T,H,D] in `dtype`, state [H,D,D] in `dtype`)."""
    T, H, D = q.shape
    q, k, v = (x.to(dtype) for x in (q, k, v))
    dev = q.device
    state = (torch.zeros(H, D, v.shape[-1], dtype=dtype, device=dev) if initial_state is None
             else initial_state.to(dev, dtype).clone())
    decay = torch.exp(-slopes.to(dev, dtype))[:, None, None]
    out = torch.empty(T, H, v.shape[-1], dtype=dtype, device=dev)
    for t in range(T):
        state = decay * state + k[t][:, :, None] * v[t][:, None, :]
        out[t] = torch.einsum("hd,hde->he", q[t], state)
    return out, state


def block_form(q, k, v, slopes, initial_state=None, block=BLOCK, dtype=torch.float32):
    """The official chunked prefill for one sequence (GH `inference`), exact up to rounding.

    Within a block of length m with local indices i, j: q_decay[i]=exp(-s(i+1)), k_decay[j]=exp(-s(m-1-j)),
    intra-block decay exp(-s(i-j)) for i>=j. O = (Q*q_decay) S + ((Q K^T)*Dmask) V ; S = exp(-sm) S + (K*k_decay)^T V.
    """
    T, H, D = q.shape
    q, k, v = (x.to(dtype).transpose(0, 1) for x in (q, k, v))  # [H, T, D]
    dev = q.device
    s = slopes.to(dev, dtype)[:, None, None]
    state = (torch.zeros(H, D, v.shape[-1], dtype=dtype, device=dev) if initial_state is None
             else initial_state.to(dev, dtype).clone())
    out = torch.empty(H, T, v.shape[-1], dtype=dtype, device=dev)
    idx = torch.arange(min(block, max(T, 1)), dtype=dtype, device=dev)
    for start in range(0, T, block):
        m = min(block, T - start)
        qb, kb, vb = q[:, start:start + m], k[:, start:start + m], v[:, start:start + m]
        i = idx[:m]
        q_decay = torch.exp(-s * (i[:, None] + 1))
        k_decay = torch.exp(-s * (m - 1 - i[:, None]))
        diff = i[:, None] - i[None, :]
        mask = torch.exp(-s * diff.clamp(min=0)) * (diff >= 0)
        out[:, start:start + m] = (qb * q_decay) @ state + ((qb @ kb.transpose(1, 2)) * mask) @ vb
        state = torch.exp(-s * m) * state + (kb * k_decay).transpose(1, 2) @ vb
    return out.transpose(0, 1), state


def prefill(q, k, v, slopes, initial_state=None, cu_seqlens=None, block=BLOCK):
    """Varlen prefill: q,k,v [T,H,D]; returns (o [T,H,D] in q.dtype, final_state [N,H,D,D] fp32). Math in fp32."""
    T, H, D = q.shape
    if cu_seqlens is None:
        cu_seqlens = torch.tensor([0, T])
    bounds = cu_seqlens.tolist()
    n = len(bounds) - 1
    out = torch.empty(T, H, v.shape[-1], dtype=q.dtype, device=q.device)
    final = torch.empty(n, H, D, v.shape[-1], dtype=torch.float32, device=q.device)
    for b in range(n):
        lo, hi = bounds[b], bounds[b + 1]
        init = None if initial_state is None else initial_state[b]
        o, final[b] = block_form(q[lo:hi], k[lo:hi], v[lo:hi], slopes, init, block)
        out[lo:hi] = o.to(q.dtype)
    return out, final


def decode(q, k, v, slopes, state_pool, slot_ids):
    """One token per sequence against pooled fp32 states, updated in place. q,k,v [B,H,D]; slot < 0 = padding."""
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[-1], dtype=q.dtype, device=q.device)
    live = (slot_ids >= 0).nonzero().flatten()
    if live.numel() == 0:
        return out
    slots = slot_ids[live].long()
    qf, kf, vf = (x[live].float() for x in (q, k, v))
    decay = torch.exp(-slopes.float())[None, :, None, None]
    state = decay * state_pool[slots] + kf[..., :, None] * vf[..., None, :]
    state_pool[slots] = state
    out[live] = torch.einsum("bhd,bhde->bhe", qf, state).to(q.dtype)
    return out
