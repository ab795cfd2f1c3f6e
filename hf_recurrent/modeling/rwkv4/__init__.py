"""RWKV-4 (Peng et al., 2023, "RWKV: Reinventing RNNs for the Transformer Era", arXiv:2305.13048)."""

from ..registry import Architecture, register
from .configuration_rwkv4 import HfrRWKV4Config
from .modeling_rwkv4 import RWKV4ChannelMix, HfrRWKV4ForCausalLM, HfrRWKV4Model, RWKV4TimeMix

_TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, intermediate_size=64, bos_token_id=1,
             eos_token_id=None, pad_token_id=0)  # no end of text: random tiny models would stop at once

ARCHITECTURE = register(
    Architecture(
        name="rwkv4",
        config_class=HfrRWKV4Config,
        model_class=HfrRWKV4Model,
        causal_lm_class=HfrRWKV4ForCausalLM,
        test_configs={
            "plain": _TINY,
            "narrow-attention-tied": dict(_TINY, attention_hidden_size=16, tie_word_embeddings=True),
        },
    )
)

__all__ = ["RWKV4ChannelMix", "HfrRWKV4Config", "HfrRWKV4ForCausalLM", "HfrRWKV4Model", "RWKV4TimeMix"]


def _register_world_tokenizer() -> None:
    from transformers import AutoTokenizer

    from ...tokenization_world import RwkvWorldTokenizer

    AutoTokenizer.register(HfrRWKV4Config, tokenizer_class=RwkvWorldTokenizer)


_register_world_tokenizer()
