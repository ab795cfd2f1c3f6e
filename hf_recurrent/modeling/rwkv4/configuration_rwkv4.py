"""Config of RWKV-4 (Peng et al., 2023, "RWKV: Reinventing RNNs for the Transformer Era")."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..common.configuration import RecurrentConfig


@strict
class HfrRWKV4Config(RecurrentConfig):
    """RWKV-4: token-shift time mix with the WKV recurrence, squared-ReLU channel mix, LayerNorm blocks.

    ``attention_hidden_size`` is the width of the time mix's key/value/receptance (BlinkDL's ``dim_att``, default
    ``hidden_size``); the channel mix is ``intermediate_size`` wide (``dim_ffn``, default ``4 * hidden_size``).
    Byte-level and world vocabularies use id 0 as end of text.
    """

    model_type = "hfr_rwkv4"

    attention_hidden_size: int | None = None
    norm_eps: float = 1e-5
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 0

    @property
    def attention_size(self) -> int:
        return self.hidden_size if self.attention_hidden_size is None else self.attention_hidden_size

    @property
    def mlp_size(self) -> int:
        return 4 * self.hidden_size if self.intermediate_size is None else self.intermediate_size

    def validate_architecture(self) -> None:
        super().validate_architecture()
        if self.attention_size <= 0 or self.mlp_size <= 0:
            raise ValueError(
                f"attention_hidden_size ({self.attention_size}) and intermediate_size ({self.mlp_size}) "
                "must be positive"
            )
