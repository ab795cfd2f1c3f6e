"""Config of RetNet (Sun et al., 2023) with the fields of flash-linear-attention's ``RetNetConfig``."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict

from ..common.configuration import RecurrentConfig
from ..common.layers import FEATURE_MAPS


@strict
class HfrRetNetConfig(RecurrentConfig):
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
    num_kv_heads: int | None = None
    feature_map: str | None = None
    use_output_gate: bool = True
    elementwise_affine: bool = True
    rope_theta: float = 10000.0

    @property
    def key_dim(self) -> int:
        return round(self.hidden_size * self.expand_k)

    @property
    def value_dim(self) -> int:
        return round(self.hidden_size * self.expand_v)

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    def validate_architecture(self) -> None:
        super().validate_architecture()
        for name, ratio in (("expand_k", self.expand_k), ("expand_v", self.expand_v)):
            dim = self.hidden_size * ratio
            if not math.isclose(dim, round(dim)) or round(dim) <= 0:
                raise ValueError(f"hidden_size * {name} must be a positive integer; got {dim}")
        if self.key_dim % self.num_heads or self.value_dim % self.num_heads:
            raise ValueError(
                f"key dim {self.key_dim} and value dim {self.value_dim} must be divisible by num_heads={self.num_heads}"
            )
        if (self.key_dim // self.num_heads) % 2:
            raise ValueError(
                f"the key head dim ({self.key_dim // self.num_heads}) must be even for the rotary embedding"
            )
        if self.num_heads % self.kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.kv_heads}")
        if self.feature_map is not None and self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {sorted(FEATURE_MAPS)} or None; got {self.feature_map!r}")
