"""Config of GateLoop (Katsch, 2023) with the hyperparameters of gateloop-transformer's ``Transformer``."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..common.configuration import RecurrentConfig


@strict
class HfrGateLoopConfig(RecurrentConfig):
    """GateLoop: per head, ``C_t = a_t C_{t-1} + k_t^T v_t``, ``o_t = q_t Re(C_t)`` with a data-controlled gate.

    ``a_t = sigmoid(|z_t|) e^{i arg z_t}`` where ``z_t`` is a complex number per head projected from the input
    (``complex_gates``); with ``complex_gates=False`` only its real part is used: ``a_t = sign(Re z_t)
    sigmoid(|Re z_t|)`` (gateloop-transformer's ``ablate_complex``). ``gate_dim`` (default ``hidden_size``) is the
    width of ``q, k, v``, split over ``num_heads`` (default ``gate_dim``: one channel per head, the package default).
    The MLP is ``Linear -> GELU -> Linear`` with biases, width ``ff_mult * hidden_size``. ``use_output_gate``:
    output times ``silu(W_g x)``; ``sub_layernorm``: LayerNorm of the merged heads first.
    ``state_transition_grad_frac`` scales the gradient reaching the gate projection (forward unchanged).
    """

    model_type = "hfr_gateloop"

    hidden_ratio: int | float | None = None
    norm_eps: float = 1e-12
    gate_dim: int | None = None
    num_heads: int | None = None
    ff_mult: int = 4
    complex_gates: bool = True
    use_output_gate: bool = True
    sub_layernorm: bool = False
    state_transition_grad_frac: float = 0.9

    def __post_init__(self, **kwargs) -> None:
        if self.gate_dim is None:
            self.gate_dim = self.hidden_size
        if self.num_heads is None:
            self.num_heads = self.gate_dim
        if self.intermediate_size is None:
            self.intermediate_size = self.ff_mult * self.hidden_size
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.gate_dim // self.num_heads

    @property
    def has_out_proj(self) -> bool:
        """gateloop-transformer drops the output projection when it would be square and ungated."""
        return self.use_output_gate or self.gate_dim != self.hidden_size

    def validate_architecture(self) -> None:
        super().validate_architecture()
        if self.gate_dim <= 0 or self.num_heads <= 0 or self.gate_dim % self.num_heads:
            raise ValueError(f"gate_dim={self.gate_dim} must be a positive multiple of num_heads={self.num_heads}")
        if not 0.0 <= self.state_transition_grad_frac <= 1.0:
            raise ValueError(f"state_transition_grad_frac must be in [0, 1]; got {self.state_transition_grad_frac}")
