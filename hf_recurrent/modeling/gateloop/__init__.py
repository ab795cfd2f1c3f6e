"""GateLoop (Katsch, 2023, "GateLoop: Fully Data-Controlled Linear Recurrence for Sequence Modeling")."""

from ..registry import Architecture, register
from .configuration_gateloop import HfrGateLoopConfig
from .modeling_gateloop import GateLoopMixer, HfrGateLoopForCausalLM, HfrGateLoopModel

_TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, ff_mult=2, bos_token_id=1, eos_token_id=2,
             pad_token_id=0)

ARCHITECTURE = register(
    Architecture(
        name="gateloop",
        config_class=HfrGateLoopConfig,
        model_class=HfrGateLoopModel,
        causal_lm_class=HfrGateLoopForCausalLM,
        test_configs={
            "complex-one-channel-heads": _TINY,
            "real-heads4-subln-nogate": dict(_TINY, num_heads=4, complex_gates=False, sub_layernorm=True,
                                             use_output_gate=False, tie_word_embeddings=True),
        },
    )
)

__all__ = ["GateLoopMixer", "HfrGateLoopConfig", "HfrGateLoopForCausalLM", "HfrGateLoopModel"]
