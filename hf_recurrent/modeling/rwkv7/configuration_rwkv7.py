"""Config of RWKV-7 "Goose" (Peng et al., 2025, "RWKV-7 Goose with Expressive Dynamic State Evolution")."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..common.configuration import RecurrentConfig


def _lora_rank(value: float) -> int:
    """BlinkDL's default LoRA width: ``max(32, round(value / 32) * 32)``."""
    return max(32, int(round(value / 32)) * 32)


@strict
class HfrRWKV7Config(RecurrentConfig):
    """RWKV-7: token-shift time mix over the generalised delta rule, squared-ReLU channel mix, LayerNorm blocks.

    ``head_size`` (``N``) splits ``hidden_size`` into ``num_heads`` heads. LoRA widths
    of the decay / in-context learning rate ``a`` / value residual / output gate default to BlinkDL's rules
    (``1.8 C^0.5``, ``1.8 C^0.5``, ``1.3 C^0.5``, ``0.6 C^0.8``, rounded to multiples of 32, at least 32).
    ``head_norm_eps`` is the per-head GroupNorm's (``ln_x``) epsilon, ``64e-5`` in every published model.
    """

    model_type = "hfr_rwkv7"

    head_size: int = 64
    decay_low_rank_dim: int | None = None
    a_low_rank_dim: int | None = None
    v_low_rank_dim: int | None = None
    gate_low_rank_dim: int | None = None
    norm_eps: float = 1e-5
    head_norm_eps: float = 64e-5
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 0

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_size

    @property
    def mlp_size(self) -> int:
        return 4 * self.hidden_size if self.intermediate_size is None else self.intermediate_size

    @property
    def lora_ranks(self) -> dict[str, int]:
        """Widths of the ``w``, ``a``, ``v`` and ``g`` LoRAs."""
        root, C = self.hidden_size**0.5, self.hidden_size
        chosen = (self.decay_low_rank_dim, self.a_low_rank_dim, self.v_low_rank_dim, self.gate_low_rank_dim)
        defaults = (_lora_rank(1.8 * root), _lora_rank(1.8 * root), _lora_rank(1.3 * root), _lora_rank(0.6 * C**0.8))
        return {name: d if c is None else c for name, c, d in zip("wavg", chosen, defaults)}

    def validate_architecture(self) -> None:
        super().validate_architecture()
        if self.head_size <= 0 or self.hidden_size % self.head_size:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a positive multiple of head_size ({self.head_size})"
            )
        if min(self.lora_ranks.values()) <= 0 or self.mlp_size <= 0:
            raise ValueError(f"LoRA widths {self.lora_ranks} and intermediate_size {self.mlp_size} must be positive")
