"""Mamba-2 (Dao & Gu, 2024, "Transformers are SSMs"): SSD on the chunked linear-attention kernel."""

from ..registry import Architecture, register
from .configuration_mamba2 import HfrMamba2Config
from .modeling_mamba2 import HfrMamba2ForCausalLM, Mamba2Mixer, HfrMamba2Model

_TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=8, head_dim=16, conv_kernel=4,
             bos_token_id=1, eos_token_id=2, pad_token_id=0)

ARCHITECTURE = register(
    Architecture(
        name="mamba2",
        config_class=HfrMamba2Config,
        model_class=HfrMamba2Model,
        causal_lm_class=HfrMamba2ForCausalLM,
        test_configs={
            "plain-tied": dict(_TINY, tie_word_embeddings=True),
            "groups2-bias": dict(_TINY, n_groups=2, head_dim=8, use_bias=True, use_conv_bias=False,
                                 time_step_limit=(0.0, 0.5)),
        },
    )
)

__all__ = ["HfrMamba2Config", "HfrMamba2ForCausalLM", "Mamba2Mixer", "HfrMamba2Model"]
