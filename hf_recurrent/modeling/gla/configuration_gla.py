"""Config of Gated Linear Attention (Yang et al., 2023) with the fields of flash-linear-attention's GLAConfig."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict

from ..common.configuration import RecurrentConfig
from ..common.layers import FEATURE_MAPS


@strict
class GLAConfig(RecurrentConfig):
    """GLA: per head, ``S_t = diag(a_t) S_{t-1} + k_t^T v_t``, ``o_t = q_t S_t / sqrt(d_k)``.

    ``a_t = exp(logsigmoid(W2 W1 x_t + b) / gate_logit_normalizer)`` (clamped below at ``clamp_min`` in log space);
    key width ``hidden_size * expand_k``, value width ``hidden_size * expand_v``, split over ``num_heads``;
    ``num_kv_heads < num_heads`` shares keys, values and decays across groups of query heads.
    """

    model_type = "hfr_gla"

    expand_k: float = 0.5
    expand_v: float = 1.0
    num_heads: int = 4
    num_kv_heads: int | None = None
    feature_map: str | None = None
    use_short_conv: bool = False
    conv_size: int = 4
    conv_bias: bool = False
    use_output_gate: bool = True
    clamp_min: float | None = None
    elementwise_affine: bool = True
    gate_logit_normalizer: int | float = 16
    gate_low_rank_dim: int = 16

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
        for name, dim in (("expand_k", self.hidden_size * self.expand_k), ("expand_v", self.hidden_size * self.expand_v)):
            if not math.isclose(dim, round(dim)) or round(dim) <= 0:
                raise ValueError(f"hidden_size * {name} must be a positive integer; got {dim}")
        if self.key_dim % self.num_heads or self.value_dim % self.num_heads:
            raise ValueError(
                f"key dim {self.key_dim} and value dim {self.value_dim} must be divisible by num_heads={self.num_heads}"
            )
        if self.num_heads % self.kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.kv_heads}")
        if self.feature_map is not None and self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {sorted(FEATURE_MAPS)} or None; got {self.feature_map!r}")
        if self.use_short_conv and self.conv_size < 2:
            raise ValueError(f"conv_size must be >= 2 with use_short_conv; got {self.conv_size}")
