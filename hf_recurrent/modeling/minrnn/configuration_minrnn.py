"""Configs of the minimal RNNs of Feng et al., "Were RNNs All We Needed?" (2024): minGRU and minLSTM."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..common.configuration import RecurrentConfig


@strict
class MinRNNConfig(RecurrentConfig):
    """The language model of minGRU-pytorch (``minLM``): per block an optional causal convolution with a residual,
    ``x + rnn(RMSNorm(x))``, ``x + MLP(RMSNorm(x))`` with a GELU MLP (biases, width ``hidden_size * hidden_ratio``
    unless ``intermediate_size``), then RMSNorm and the LM head.

    The recurrence runs on ``int(hidden_size * expansion)`` channels; ``proj_out`` (default: ``expansion != 1``)
    maps them back. ``use_conv``: depthwise causal convolution of width ``conv_size`` (bias) followed by a
    point-wise linear map (bias), no activation.
    """

    model_type = "hfr_minrnn"
    cell = "mingru"

    hidden_ratio: int | float | None = 4
    hidden_act: str = "gelu"
    expansion: float = 1.5
    proj_out: bool | None = None
    use_conv: bool = False
    conv_size: int = 3

    @property
    def inner_size(self) -> int:
        return int(self.hidden_size * self.expansion)

    @property
    def use_proj_out(self) -> bool:
        return self.expansion != 1 if self.proj_out is None else self.proj_out

    @property
    def mlp_size(self) -> int:
        if self.intermediate_size is not None:
            return self.intermediate_size
        return int(self.hidden_size * (4 if self.hidden_ratio is None else self.hidden_ratio))

    def validate_architecture(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "inner_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.hidden_act != "gelu":
            raise ValueError(f"hidden_act must be 'gelu' (minLM's MLP); got {self.hidden_act!r}")
        if not self.use_proj_out and self.inner_size != self.hidden_size:
            raise ValueError(f"proj_out=False needs expansion=1 (inner size {self.inner_size} != {self.hidden_size})")
        if self.use_conv and self.conv_size < 2:
            raise ValueError(f"conv_size must be >= 2 with use_conv; got {self.conv_size}")


@strict
class HfrMinGRUConfig(MinRNNConfig):
    """minGRU: ``h_t = (1 - z_t) h_{t-1} + z_t g(h~_t)``, ``z_t = sigmoid(k_t)``, both from one projection."""

    model_type = "hfr_mingru"
    cell = "mingru"


@strict
class HfrMinLSTMConfig(MinRNNConfig):
    """minLSTM: ``h_t = f'_t h_{t-1} + i'_t g(h~_t)`` with ``f', i'`` the forget and input gates normalised to sum 1."""

    model_type = "hfr_minlstm"
    cell = "minlstm"
