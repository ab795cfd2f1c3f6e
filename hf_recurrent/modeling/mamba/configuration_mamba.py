"""Config of Mamba (Gu & Dao, 2023) with the fields of mamba-ssm's / transformers' ``MambaConfig``."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict

from ..common.configuration import RecurrentConfig


@strict
class HfrMambaConfig(RecurrentConfig):
    """Mamba-1: per channel ``d`` of ``d_inner = expand * hidden_size`` and state index ``n < state_size``,
    ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``, ``y_t = (C_t h_t + D x_t) * silu(z_t)``.

    ``dt_t = softplus(dt_proj(x_proj(x_t)[:time_step_rank]))`` (``time_step_rank = ceil(hidden_size / 16)`` when
    ``"auto"``); ``A = -exp(A_log)``. Blocks are ``x + mixer(RMSNorm(x))`` without MLP (``hidden_ratio = 0``), the
    residual stream kept in float32 when ``residual_in_fp32``. ``vocab_size`` is rounded up to a multiple of
    ``pad_vocab_size_multiple`` (mamba-ssm's rule). ``use_bcdt_rms`` adds falcon-mamba's weightless RMS norms on
    ``dt``, ``B`` and ``C`` (eps ``mixer_rms_eps``). ``time_step_*`` only shape the initialisation.
    """

    model_type = "hfr_mamba"

    vocab_size: int = 50280
    hidden_size: int = 768
    num_hidden_layers: int = 24
    hidden_ratio: int | float | None = 0
    norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_word_embeddings: bool = True
    pad_vocab_size_multiple: int = 1
    state_size: int = 16
    expand: int = 2
    conv_kernel: int = 4
    use_bias: bool = False
    use_conv_bias: bool = True
    time_step_rank: int | str = "auto"
    time_step_scale: float = 1.0
    time_step_min: float = 0.001
    time_step_max: float = 0.1
    time_step_floor: float = 1e-4
    use_bcdt_rms: bool = False
    mixer_rms_eps: float = 1e-6
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 0
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs) -> None:
        if self.time_step_rank == "auto":
            self.time_step_rank = math.ceil(self.hidden_size / 16)
        if self.pad_vocab_size_multiple > 1 and self.vocab_size % self.pad_vocab_size_multiple:
            self.vocab_size += self.pad_vocab_size_multiple - self.vocab_size % self.pad_vocab_size_multiple
        super().__post_init__(**kwargs)

    @property
    def d_inner(self) -> int:
        """``d_inner``: the width of ``x``, ``z`` and the scan."""
        return self.expand * self.hidden_size

    def validate_architecture(self) -> None:
        super().validate_architecture()
        if self.mlp_size != 0:
            raise ValueError(f"Mamba blocks have no MLP: hidden_ratio must be 0; got {self.hidden_ratio}")
        if not isinstance(self.time_step_rank, int) or self.time_step_rank <= 0:
            raise ValueError(f"time_step_rank must be a positive int or 'auto'; got {self.time_step_rank!r}")
        if self.state_size <= 0 or self.expand <= 0:
            raise ValueError(f"state_size and expand must be positive; got {self.state_size}, {self.expand}")
        if self.conv_kernel < 2:
            raise ValueError(f"conv_kernel must be >= 2; got {self.conv_kernel}")
        if self.pad_vocab_size_multiple <= 0:
            raise ValueError(f"pad_vocab_size_multiple must be positive; got {self.pad_vocab_size_multiple}")
        if not 0 < self.time_step_min <= self.time_step_max:
            raise ValueError(f"need 0 < time_step_min <= time_step_max; got {self.time_step_min}, {self.time_step_max}")
