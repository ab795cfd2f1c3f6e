"""Gated Linear Attention (Yang, Wang, Shen, Panda, Kim, 2023)."""

from ..registry import Architecture, register
from .configuration_gla import HfrGLAConfig
from .modeling_gla import GatedLinearAttention, HfrGLAForCausalLM, HfrGLAModel

_TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_heads=2, hidden_ratio=2, bos_token_id=1,
             eos_token_id=2, pad_token_id=0)

ARCHITECTURE = register(
    Architecture(
        name="gla",
        config_class=HfrGLAConfig,
        model_class=HfrGLAModel,
        causal_lm_class=HfrGLAForCausalLM,
        test_configs={
            "plain": _TINY,
            "conv-gqa": dict(_TINY, use_short_conv=True, conv_bias=True, num_heads=4, num_kv_heads=2),
            "featuremap-nogate-tied": dict(_TINY, feature_map="relu", use_output_gate=False, clamp_min=-0.5,
                                           tie_word_embeddings=True),
        },
    )
)

__all__ = ["HfrGLAConfig", "HfrGLAForCausalLM", "HfrGLAModel", "GatedLinearAttention"]
