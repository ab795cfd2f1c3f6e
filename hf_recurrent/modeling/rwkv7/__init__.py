"""RWKV-7 "Goose" (Peng et al., 2025, "RWKV-7 Goose with Expressive Dynamic State Evolution", arXiv:2503.14456)."""

from ..registry import Architecture, register
from .configuration_rwkv7 import HfrRWKV7Config
from .modeling_rwkv7 import RWKV7ChannelMix, HfrRWKV7ForCausalLM, HfrRWKV7Model, RWKV7TimeMix

_TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, head_size=8, intermediate_size=64,
             decay_low_rank_dim=8, a_low_rank_dim=8, v_low_rank_dim=4, gate_low_rank_dim=8, bos_token_id=1,
             eos_token_id=None, pad_token_id=0)  # no end of text: random tiny models would stop at once

ARCHITECTURE = register(
    Architecture(
        name="rwkv7",
        config_class=HfrRWKV7Config,
        model_class=HfrRWKV7Model,
        causal_lm_class=HfrRWKV7ForCausalLM,
        test_configs={
            "plain": dict(_TINY, num_hidden_layers=3),
            "wide-heads-tied": dict(_TINY, head_size=16, tie_word_embeddings=True),
        },
    )
)


def _register_world_tokenizer() -> None:
    from transformers import AutoTokenizer

    from ...tokenization_world import RwkvWorldTokenizer

    AutoTokenizer.register(HfrRWKV7Config, tokenizer_class=RwkvWorldTokenizer)


_register_world_tokenizer()

__all__ = ["RWKV7ChannelMix", "HfrRWKV7Config", "HfrRWKV7ForCausalLM", "HfrRWKV7Model", "RWKV7TimeMix"]
