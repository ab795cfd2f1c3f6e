"""Config of RetNet (Sun et al., 2023) with the fields of flash-linear-attention's ``RetNetConfig``."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..common.configuration import MultiHeadConfig


@strict
class HfrRetNetConfig(MultiHeadConfig):
    """RetNet: per head ``h``, ``S_t = gamma_h S_{t-1} + k_t^T v_t``, ``o_t = q_t S_t / sqrt(d_k)``.

    ``gamma_h = 1 - 2^(-5-h)`` is fixed (not a parameter); ``q, k`` are rotated by their position (rotary
    embedding over the key head dim, base ``rope_theta``), which with the decay gives RetNet's relative position
    ``gamma^(t-s) e^{i theta (t-s)}``. Key width ``hidden_size * expand_k``, value width ``hidden_size * expand_v``
    over ``num_heads`` heads (``num_kv_heads`` < ``num_heads``: keys and values shared by groups of query heads).
    """

    model_type = "hfr_retnet"

    hidden_ratio: int | float | None = 2
    expand_k: float = 1.0
    expand_v: float = 2.0
    num_heads: int = 8
    rope_theta: float = 10000.0

    def validate_architecture(self) -> None:
        super().validate_architecture()
        if (self.key_dim // self.num_heads) % 2:
            raise ValueError(
                f"the key head dim ({self.key_dim // self.num_heads}) must be even for the rotary embedding"
            )
