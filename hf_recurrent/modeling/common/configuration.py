"""The config fields every recurrent causal LM shares; each architecture's config subclasses this one."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .layers import FEATURE_MAPS


@strict
class RecurrentConfig(PreTrainedConfig):
    """Fields of the shared decoder shell (embedding, blocks of mixer + MLP, final norm, LM head).

    ``intermediate_size`` of the gated MLP defaults to ``hidden_ratio * hidden_size * 2/3`` rounded up to a multiple
    of 256 (the rule of flash-linear-attention's published models); ``hidden_ratio = 0`` means blocks without MLP
    (Mamba-style). Every layer is recurrent: ``layer_types`` is ``"linear_attention"`` for all of them, which makes
    ``DynamicCache(config=...)`` hold transformers' ``LinearAttentionLayer`` per layer.
    """

    model_type = "hf_recurrent"

    vocab_size: int = 32000
    hidden_size: int = 2048
    num_hidden_layers: int = 24
    hidden_ratio: int | float | None = 4
    intermediate_size: int | None = None
    hidden_act: str = "swish"
    norm_eps: float = 1e-6
    residual_in_fp32: bool = False
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    use_cache: bool = True
    prefill_chunk_length: int | None = 8192
    use_cuda_graphs: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2

    @property
    def layer_types(self) -> list[str]:
        return ["linear_attention"] * self.num_hidden_layers

    @property
    def mlp_size(self) -> int:
        """Width of the gated MLP (0: no MLP in the blocks)."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        ratio = 4 if self.hidden_ratio is None else self.hidden_ratio
        if ratio == 0:
            return 0
        size = int(self.hidden_size * ratio * 2 / 3)
        return 256 * ((size + 255) // 256)

    def validate_architecture(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.hidden_act not in ("swish", "silu"):
            raise ValueError(f"hidden_act must be 'swish' (SwiGLU MLP); got {self.hidden_act!r}")


@strict
class MultiHeadConfig(RecurrentConfig):
    """Fields of multi-head linear-attention mixers (GLA, RetNet): widths, heads, grouped keys, output gate.

    Key width ``hidden_size * expand_k`` and value width ``hidden_size * expand_v`` are split over ``num_heads``;
    ``num_kv_heads < num_heads`` shares keys and values across groups of query heads; ``feature_map`` (a name of
    ``FEATURE_MAPS``) applies to queries and keys; ``use_output_gate``: per-head ``RMSNorm(o) * silu(g_proj(x))``.
    """

    expand_k: float = 0.5
    expand_v: float = 1.0
    num_heads: int = 4
    num_kv_heads: int | None = None
    feature_map: str | None = None
    use_output_gate: bool = True
    elementwise_affine: bool = True

    @property
    def key_dim(self) -> int:
        return round(self.hidden_size * self.expand_k)

    @property
    def value_dim(self) -> int:
        return round(self.hidden_size * self.expand_v)

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    def validate_architecture(self) -> None:
        super().validate_architecture()
        for name, ratio in (("expand_k", self.expand_k), ("expand_v", self.expand_v)):
            dim = self.hidden_size * ratio
            if not math.isclose(dim, round(dim)) or round(dim) <= 0:
                raise ValueError(f"hidden_size * {name} must be a positive integer; got {dim}")
        if self.key_dim % self.num_heads or self.value_dim % self.num_heads:
            raise ValueError(
                f"key dim {self.key_dim} and value dim {self.value_dim} must be divisible by num_heads={self.num_heads}"
            )
        if self.num_heads % self.kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.kv_heads}")
        if self.feature_map is not None and self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {sorted(FEATURE_MAPS)} or None; got {self.feature_map!r}")
