"""Config of Mamba-2 (Dao & Gu, 2024) with the fields of transformers' ``HfrMamba2Config``."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict

from ..common.configuration import RecurrentConfig


@strict
class HfrMamba2Config(RecurrentConfig):
    """Mamba-2 (SSD): per head ``h``, ``S_t = exp(dt_t A_h) S_{t-1} + (dt_t B_t)^T x_t``, ``y_t = C_t S_t + D_h x_t``.

    ``d_inner = expand * hidden_size = num_heads * head_dim``; ``B_t, C_t`` have ``state_size`` entries per group
    (``n_groups`` groups, each shared by ``num_heads / n_groups`` heads); ``dt_t = clamp(softplus(dt_raw + dt_bias),
    *time_step_limit)``; ``A_h = -exp(A_log_h)``. Blocks have no MLP (``hidden_ratio = 0``) and keep the residual in
    float32. ``time_step_min/max/floor`` only shape the initialisation of ``dt_bias``.
    """

    model_type = "hfr_mamba2"

    hidden_ratio: int | float | None = 0
    norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    state_size: int = 128
    expand: int = 2
    head_dim: int = 64
    num_heads: int | None = None
    n_groups: int = 1
    conv_kernel: int = 4
    use_bias: bool = False
    use_conv_bias: bool = True
    time_step_limit: list[float] | tuple[float, ...] = (0.0, float("inf"))
    time_step_min: float = 0.001
    time_step_max: float = 0.1
    time_step_floor: float = 1e-4

    def __post_init__(self, **kwargs) -> None:
        if self.num_heads is None:
            self.num_heads = self.intermediate_dim // self.head_dim
        self.time_step_limit = [float(x) for x in self.time_step_limit]
        super().__post_init__(**kwargs)

    @property
    def intermediate_dim(self) -> int:
        """``d_inner``, the width of ``x`` and of the gate ``z``."""
        return self.expand * self.hidden_size

    @property
    def conv_dim(self) -> int:
        """Channels of the depthwise convolution: ``x``, ``B`` and ``C`` together."""
        return self.intermediate_dim + 2 * self.n_groups * self.state_size

    def validate_architecture(self) -> None:
        super().validate_architecture()
        if self.mlp_size != 0:
            raise ValueError(f"Mamba-2 blocks have no MLP: hidden_ratio must be 0; got {self.hidden_ratio}")
        if self.num_heads * self.head_dim != self.intermediate_dim:
            raise ValueError(
                f"num_heads * head_dim ({self.num_heads} * {self.head_dim}) must equal expand * hidden_size "
                f"({self.expand} * {self.hidden_size} = {self.intermediate_dim})"
            )
        if self.n_groups <= 0 or self.num_heads % self.n_groups:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of n_groups={self.n_groups}")
        if self.state_size <= 0 or self.conv_kernel < 2:
            raise ValueError(
                f"state_size must be positive and conv_kernel >= 2; got {self.state_size}, {self.conv_kernel}"
            )
        low, high = self.time_step_limit
        if not (0.0 <= low < high) or math.isnan(high):
            raise ValueError(f"time_step_limit must be (low, high) with 0 <= low < high; got {self.time_step_limit}")
