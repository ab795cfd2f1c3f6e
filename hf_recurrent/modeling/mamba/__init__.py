"""Mamba (Gu & Dao, 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces")."""

from ..registry import Architecture, register
from .configuration_mamba import HfrMambaConfig
from .modeling_mamba import HfrMambaForCausalLM, HfrMambaModel, MambaMixer

_TINY = dict(vocab_size=61, pad_vocab_size_multiple=8, hidden_size=32, num_hidden_layers=2, state_size=8,
             bos_token_id=1, eos_token_id=2, pad_token_id=0)

ARCHITECTURE = register(
    Architecture(
        name="mamba",
        config_class=HfrMambaConfig,
        model_class=HfrMambaModel,
        causal_lm_class=HfrMambaForCausalLM,
        test_configs={
            "plain-tied": _TINY,
            "falcon-bias-untied": dict(_TINY, use_bcdt_rms=True, use_bias=True, use_conv_bias=False, conv_kernel=3,
                                       tie_word_embeddings=False, residual_in_fp32=False, eos_token_id=None),
        },
    )
)

__all__ = ["HfrMambaConfig", "HfrMambaForCausalLM", "HfrMambaModel", "MambaMixer"]
