"""PyTorch reference for chunked gated linear attention.

Two computations of the same maths (see the package docstring):

* :func:`recurrent_gla` is the definition: a loop over time, one state update per token. It is the yardstick the
  tests hold every other path against, and it serves the one-token decode step.
* :func:`chunk_gla` is the chunkwise-parallel form used for prefill and training on the CPU: inside a chunk of
  ``C`` tokens the output is a masked, decay-weighted attention; between chunks the state carries.

Every exponent computed here is a difference ``G_i - G_j`` with ``i >= j`` of cumulative log decays, hence ``<= 0``:
no overflow for any decay, unlike forms that divide by ``exp(G_j)``.
"""

from __future__ import annotations

import torch

CHUNK_SIZE = 16


def _expand_decay(log_decay: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
    """Log decay as float32 ``[B, T, H, Kg]`` with ``Kg`` 1 (scalar per head) or ``K`` (vector over keys)."""
    B, T, H, _ = q.shape
    if log_decay is None:
        return q.new_zeros(B, T, H, 1, dtype=torch.float32)
    if log_decay.dim() == 3:
        return log_decay.float().unsqueeze(-1)
    return log_decay.float()


def recurrent_gla_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | None,
    state: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One token: ``S <- diag(exp(g)) S + k^T v``, ``o = scale * q S``; ``state`` ``[B, H, K, V]`` is updated in place.

    ``q, k``: ``[B, H, K]``; ``v``: ``[B, H, V]``; ``log_decay``: ``[B, H, K]``, ``[B, H]`` or None.
    Returns ``o`` ``[B, H, V]`` in ``v``'s dtype.
    """
    g = _expand_decay(None if log_decay is None else log_decay.unsqueeze(1), q.unsqueeze(1))[:, 0]
    state.mul_(g.exp().unsqueeze(-1)).add_(k.float().unsqueeze(-1) * v.float().unsqueeze(-2))
    o = torch.einsum("bhk,bhkv->bhv", q.float() * scale, state)
    return o.to(v.dtype)


def _recurrent_one(q, k, v, g, scale, state):
    T = q.shape[1]
    out = []
    for t in range(T):
        state = state * g[:, t].exp().unsqueeze(-1) + k[:, t].unsqueeze(-1) * v[:, t].unsqueeze(-2)
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, state))
    return torch.stack(out, dim=1), state


def _chunk_one(q, k, v, g, scale, state, chunk_size):
    """Chunked form for one batch of equal-length sequences; all inputs float32, ``g`` ``[B, T, H, Kg]``."""
    B, T, H, K = q.shape
    C = chunk_size
    pad = (-T) % C
    if pad:
        # Padded tail: zero input, zero log decay (decay 1) -> the final state is that of the true last token.
        q, k, v, g = (torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v, g))
    N = q.shape[1] // C
    # [B, H, N, C, D]
    q, k, v, g = (x.reshape(B, N, C, H, x.shape[-1]).permute(0, 3, 1, 2, 4) for x in (q, k, v, g))
    G = g.cumsum(dim=3)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    q = q * scale
    if G.shape[-1] == 1:
        diff = (G - G.transpose(-1, -2)).masked_fill(~causal, float("-inf"))  # [B, H, N, C, C]
        attn = (q @ k.transpose(-1, -2)) * diff.exp()
    else:
        diff = (G.unsqueeze(-2) - G.unsqueeze(-3)).masked_fill(~causal.unsqueeze(-1), float("-inf"))
        attn = torch.einsum("bhnik,bhnjk,bhnijk->bhnij", q, k, diff.exp())
    o_intra = attn @ v
    q_in = q * G.exp()  # decay from the chunk start to token i
    k_out = k * (G[:, :, :, -1:] - G).exp()  # decay from token j to the chunk end
    g_end = G[:, :, :, -1].exp()  # [B, H, N, Kg]
    outs = []
    for n in range(N):
        outs.append(o_intra[:, :, n] + q_in[:, :, n] @ state)
        state = state * g_end[:, :, n].unsqueeze(-1) + k_out[:, :, n].transpose(-1, -2) @ v[:, :, n]
    o = torch.stack(outs, dim=2)  # [B, H, N, C, V]
    o = o.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, -1)[:, :T]
    return o, state


def _run(fn, q, k, v, log_decay, scale, initial_state, output_final_state, cu_seqlens, **kw):
    B, T, H, K = q.shape
    V = v.shape[-1]
    g = _expand_decay(log_decay, q)
    qf, kf, vf = q.float(), k.float(), v.float()
    if cu_seqlens is None:
        state = qf.new_zeros(B, H, K, V) if initial_state is None else initial_state.float()
        o, state = fn(qf, kf, vf, g, scale, state, **kw)
        final = state
    else:
        bounds = cu_seqlens.tolist()
        outs, finals = [], []
        for n in range(len(bounds) - 1):
            s, e = bounds[n], bounds[n + 1]
            state = qf.new_zeros(1, H, K, V) if initial_state is None else initial_state[n : n + 1].float()
            if e == s:  # an empty sequence: no output, its state passes through
                outs.append(vf.new_zeros(1, 0, H, V))
                finals.append(state)
                continue
            o_n, state = fn(qf[:, s:e], kf[:, s:e], vf[:, s:e], g[:, s:e], scale, state, **kw)
            outs.append(o_n)
            finals.append(state)
        o = torch.cat(outs, dim=1)
        final = torch.cat(finals, dim=0)
    return o.to(v.dtype), (final if output_final_state else None)


def recurrent_gla(q, k, v, log_decay, scale, initial_state=None, output_final_state=False, cu_seqlens=None):
    """Definition of the op by a loop over time (see the package docstring for arguments and shapes)."""
    return _run(_recurrent_one, q, k, v, log_decay, scale, initial_state, output_final_state, cu_seqlens)


def chunk_gla(
    q, k, v, log_decay, scale, initial_state=None, output_final_state=False, cu_seqlens=None, chunk_size=CHUNK_SIZE
):
    """Chunkwise-parallel PyTorch form (see the package docstring for arguments and shapes)."""
    return _run(
        _chunk_one, q, k, v, log_decay, scale, initial_state, output_final_state, cu_seqlens, chunk_size=chunk_size
    )
