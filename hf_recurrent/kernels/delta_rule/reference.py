"""PyTorch references of the generalised delta rule: the step-by-step recurrence and the chunked form.

Both compute the maths of :mod:`hf_recurrent.kernels.delta_rule` in float32; the chunked form processes ``C``
positions at a time with matrix products (what prefill and training want on a CPU), the recurrence one position
at a time (the definition, and the decode step).
"""

from __future__ import annotations

import torch


def _split(cu_seqlens: torch.Tensor | None, T: int) -> list[tuple[int, int]]:
    if cu_seqlens is None:
        return [(0, T)]
    offsets = cu_seqlens.tolist()
    return list(zip(offsets[:-1], offsets[1:]))


def step(
    r: torch.Tensor, log_w: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
    state: torch.Tensor, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, H, K]`` / ``[B, H, V]`` inputs, ``state [B, H, K, V]`` -> ``(o [B, H, V], new state)`` in float32."""
    r, log_w, k, v, a, b = (t.float() for t in (r, log_w, k, v, a, b))
    rank_one = b[..., :, None] * torch.einsum("bhk,bhkv->bhv", a, state)[..., None, :]
    state = torch.exp(log_w)[..., None] * state + rank_one + k[..., :, None] * v[..., None, :]
    return torch.einsum("bhk,bhkv->bhv", r, state) * scale, state


def recurrent(r, log_w, k, v, a, b, scale, initial_state, output_final_state, cu_seqlens):
    """Step by step over ``T``; shapes as in :func:`hf_recurrent.kernels.delta_rule.generalized_delta_rule`."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    outs, finals = [], []
    for n, (start, end) in enumerate(_split(cu_seqlens, T)):
        rows = slice(None) if cu_seqlens is None else slice(0, 1)
        if initial_state is None:
            state = k.new_zeros(B if cu_seqlens is None else 1, H, K, V, dtype=torch.float32)
        else:
            state = initial_state.float() if cu_seqlens is None else initial_state[n : n + 1].float()
        for t in range(start, end):
            o, state = step(*(x[rows, t] for x in (r, log_w, k, v, a, b)), state, scale)
            outs.append(o)
        finals.append(state)
    o = torch.stack(outs, dim=1) if outs else v.new_zeros(B, 0, H, V, dtype=torch.float32)
    final = torch.cat(finals, dim=0) if output_final_state else None
    return o.to(v.dtype), final


def _chunk(r, log_w, k, v, a, b, scale, state):
    """One chunk ``[B, C, H, *]`` (float32) from ``state [B, H, K, V]``: ``(o [B, C, H, V], state after)``.

    With ``G_t`` the cumulative log decay (``G_0 = 0``), the rank-one reads ``u_t = a_t^T M_{t-1}`` solve the unit
    lower-triangular system ``u_t = (a_t e^{G_{t-1}})^T M_0 + sum_{s<t} L_ts u_s + P_ts v_s`` with
    ``L_ts = sum_k a_tk b_sk e^{G_{t-1,k} - G_{s,k}}`` and ``P_ts`` alike with ``k_s``; then
    ``o_t = (r_t e^{G_t})^T M_0 + sum_{s<=t} (r_t . b_s e^{G_t - G_s}) u_s + (r_t . k_s e^{G_t - G_s}) v_s`` and
    ``M_C = e^{G_C} M_0 + sum_s e^{G_C - G_s} (b_s u_s^T + k_s v_s^T)``. Every exponent is ``<= 0``.
    """
    B, C, H, K = k.shape
    G = log_w.cumsum(dim=1)  # [B, C, H, K]: G_t, t = 1..C
    G_prev = torch.cat([torch.zeros_like(G[:, :1]), G[:, :-1]], dim=1)  # G_{t-1}
    strict = torch.ones(C, C, dtype=torch.bool, device=k.device).tril(-1)
    causal = torch.ones(C, C, dtype=torch.bool, device=k.device).tril()
    # pairwise decays e^{G_{t-1} - G_s} (s < t) and e^{G_t - G_s} (s <= t), [B, H, C, C, K]; masked before exp
    gp, g, gs = (x.transpose(1, 2) for x in (G_prev, G, G))
    decay_prev = torch.exp(torch.where(strict[..., None], gp[:, :, :, None] - gs[:, :, None], -torch.inf))
    decay_now = torch.exp(torch.where(causal[..., None], g[:, :, :, None] - gs[:, :, None], -torch.inf))
    rh, ah, bh, kh, vh = (x.transpose(1, 2) for x in (r, a, b, k, v))  # [B, H, C, *]
    L = torch.einsum("bhtk,bhsk,bhtsk->bhts", ah, bh, decay_prev)
    P = torch.einsum("bhtk,bhsk,bhtsk->bhts", ah, kh, decay_prev)
    rhs = torch.einsum("bhtk,bhkv->bhtv", ah * torch.exp(gp), state) + P @ vh
    eye = torch.eye(C, dtype=L.dtype, device=L.device)
    u = torch.linalg.solve_triangular(eye - L, rhs, upper=False, unitriangular=True)  # [B, H, C, V]
    Rb = torch.einsum("bhtk,bhsk,bhtsk->bhts", rh, bh, decay_now)
    Rk = torch.einsum("bhtk,bhsk,bhtsk->bhts", rh, kh, decay_now)
    o = torch.einsum("bhtk,bhkv->bhtv", rh * torch.exp(g), state) + Rb @ u + Rk @ vh
    to_end = torch.exp(g[:, :, -1:] - g)  # e^{G_C - G_s}, [B, H, C, K]
    state = torch.exp(g[:, :, -1])[..., None] * state + (bh * to_end).transpose(-1, -2) @ u
    state = state + (kh * to_end).transpose(-1, -2) @ vh
    return o.transpose(1, 2) * scale, state


def chunked(r, log_w, k, v, a, b, scale, initial_state, output_final_state, cu_seqlens, chunk_size: int = 16):
    """The chunked form, ``chunk_size`` positions at a time; same results as :func:`recurrent`."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    r, log_w, k, v, a, b = (x.float() for x in (r, log_w, k, v, a, b))
    outs, finals = [], []
    for n, (start, end) in enumerate(_split(cu_seqlens, T)):
        rows = slice(None) if cu_seqlens is None else slice(0, 1)
        if initial_state is None:
            state = k.new_zeros(B if cu_seqlens is None else 1, H, K, V)
        else:
            state = initial_state.float() if cu_seqlens is None else initial_state[n : n + 1].float()
        for s in range(start, end, chunk_size):
            e = min(s + chunk_size, end)
            o, state = _chunk(*(x[rows, s:e] for x in (r, log_w, k, v, a, b)), scale, state)
            outs.append(o)
        finals.append(state)
    o = torch.cat(outs, dim=1) if outs else v.new_zeros(B, 0, H, V)
    final = torch.cat(finals, dim=0) if output_final_state else None
    return o, final
