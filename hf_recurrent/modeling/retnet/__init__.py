"""RetNet (Sun, Dong, Huang, Ma, Xia, Xue, Wang, Wei, 2023, "Retentive Network"): multi-scale retention."""

from ..registry import Architecture, register
from .configuration_retnet import HfrRetNetConfig
from .modeling_retnet import HfrRetNetForCausalLM, HfrRetNetModel, MultiScaleRetention

_TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_heads=2, bos_token_id=1, eos_token_id=2,
             pad_token_id=0)

ARCHITECTURE = register(
    Architecture(
        name="retnet",
        config_class=HfrRetNetConfig,
        model_class=HfrRetNetModel,
        causal_lm_class=HfrRetNetForCausalLM,
        test_configs={
            "plain": _TINY,
            "gqa-nogate-tied": dict(_TINY, num_heads=4, num_kv_heads=2, use_output_gate=False,
                                    tie_word_embeddings=True),
        },
    )
)

__all__ = ["HfrRetNetConfig", "HfrRetNetForCausalLM", "HfrRetNetModel", "MultiScaleRetention"]
