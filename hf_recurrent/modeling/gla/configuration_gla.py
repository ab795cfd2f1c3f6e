"""Config of Gated Linear Attention (Yang et al., 2023) with the fields of flash-linear-attention's GLAConfig."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..common.configuration import MultiHeadConfig


@strict
class HfrGLAConfig(MultiHeadConfig):
    """GLA: per head, ``S_t = diag(a_t) S_{t-1} + k_t^T v_t``, ``o_t = q_t S_t / sqrt(d_k)``.

    ``a_t = exp(logsigmoid(W2 W1 x_t + b) / gate_logit_normalizer)`` (clamped below at ``clamp_min`` in log space);
    widths, heads and the output gate as in :class:`MultiHeadConfig`; ``use_short_conv``: depthwise causal
    convolutions (width ``conv_size``, SiLU) on q, k and v.
    """

    model_type = "hfr_gla"

    use_short_conv: bool = False
    conv_size: int = 4
    conv_bias: bool = False
    clamp_min: float | None = None
    gate_logit_normalizer: int | float = 16
    gate_low_rank_dim: int = 16

    def validate_architecture(self) -> None:
        super().validate_architecture()
        if self.use_short_conv and self.conv_size < 2:
            raise ValueError(f"conv_size must be >= 2 with use_short_conv; got {self.conv_size}")
