"""What RWKV-4 and RWKV-7 blocks share: LayerNorm, token shift, and the block layout on the shared shell.

Block ``i``: ``x = ln0(x)`` (block 0 only, right after the embedding), ``x = x + time_mix(ln1(x))``,
``x = x + channel_mix(ln2(x))``. Both mixers carry a token-shift buffer (the previous token's normalised input,
``[B, hidden]``) in their cache slot's conv tail as ``[B, hidden, 1]``: slot 0 for the time mix (next to its WKV
state), slot 1 for the channel mix.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer

from ..common import RecurrentBlock, RecurrentConfig, load_state, store_state

TIME_MIX_SLOT, CHANNEL_MIX_SLOT = 0, 1


class RwkvLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm(hidden_size, eps)`` with weight and bias (RWKV's ln0/ln1/ln2/ln_out)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__(hidden_size, eps=eps)

    def _init_weights(self, config: RecurrentConfig) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)


def token_shift(
    x: torch.Tensor,
    attention_mask: torch.Tensor | None,
    previous: torch.Tensor | None,
    cu_seqlens: torch.LongTensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shifted, last)``: for each position the last REAL input before it, and the new buffer.

    ``x`` ``[B, T, C]``; ``attention_mask`` ``[B, T]`` (0 = padding) or ``None``; ``previous`` ``[B, C]`` (the
    buffer carried from earlier calls; zeros when ``None``). ``shifted[:, t]`` is ``x`` at the latest real position
    ``< t``, else ``previous``; ``last`` is ``x`` at the latest real position, else ``previous`` (an all-padding
    call leaves the buffer exactly unchanged). With packed sequences (``cu_seqlens``, ``B = 1``) every document
    starts from zeros.
    """
    B, T, C = x.shape
    if previous is None:
        previous = x.new_zeros(B, C)
    padded = torch.cat([previous.to(x.dtype)[:, None], x], dim=1)  # index 0: the carried buffer
    if cu_seqlens is not None:
        starts = torch.zeros(T, dtype=x.dtype, device=x.device).index_fill(0, cu_seqlens[:-1].clamp_max(T - 1), 1)
        return padded[:, :-1] * (1 - starts)[None, :, None], padded[:, -1]
    if attention_mask is None:
        return padded[:, :-1], padded[:, -1]
    positions = torch.arange(1, T + 1, device=x.device).expand(B, T)
    latest = torch.where(attention_mask.bool(), positions, torch.zeros_like(positions)).cummax(dim=1).values
    before = torch.cat([latest.new_zeros(B, 1), latest], dim=1)  # latest real index (into padded) up to t - 1
    shifted = padded.gather(1, before[:, :-1, None].expand(B, T, C))
    last = padded.gather(1, before[:, -1:, None].expand(B, 1, C))[:, 0]
    return shifted, last


def load_shift(cache: Cache | None, layer_idx: int, slot: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(token-shift buffer [B, C] or None, recurrent state or None)`` of a cache slot."""
    tail, state = load_state(cache, layer_idx, slot)
    return (None if tail is None else tail[..., 0]), state


def store_shift(
    cache: Cache | None, layer_idx: int, slot: int, last: torch.Tensor, state: torch.Tensor | None = None
) -> None:
    """Write the token-shift buffer ``[B, C]`` (and a recurrent state) into a cache slot."""
    store_state(cache, layer_idx, last[..., None], state, slot=slot)


class RwkvBlock(RecurrentBlock):
    """``ln0`` (block 0) -> ``x + time_mix(ln1(x))`` -> ``x + channel_mix(ln2(x))``, with LayerNorm throughout.

    Subclasses set ``channel_mix_class`` (built as ``channel_mix_class(config, layer_idx)``, called like a mixer).
    ``cu_seqlens`` (packed sequences) goes to both mixers; other keyword arguments of ``forward`` go to the time mix
    (RWKV-7's ``layer_context``).
    """

    norm_class: ClassVar[type[nn.Module]] = RwkvLayerNorm
    channel_mix_class: ClassVar[type[nn.Module]]

    def __init__(self, config: RecurrentConfig, layer_idx: int, mixer_class: type[nn.Module]) -> None:
        GradientCheckpointingLayer.__init__(self)  # not RecurrentBlock's: no gated MLP, no RMSNorm
        self.pre_norm = self.norm_class(config.hidden_size, eps=config.norm_eps) if layer_idx == 0 else None
        self.mixer_norm = self.norm_class(config.hidden_size, eps=config.norm_eps)
        self.mixer = mixer_class(config, layer_idx)
        self.mlp_norm = self.norm_class(config.hidden_size, eps=config.norm_eps)
        self.mlp = self.channel_mix_class(config, layer_idx)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        cu_seqlens: torch.LongTensor | None = None,
        **mixer_kwargs,
    ) -> torch.Tensor:
        packed = {} if cu_seqlens is None else {"cu_seqlens": cu_seqlens}
        if self.pre_norm is not None:
            hidden_states = self.pre_norm(hidden_states)
        mixed = self.mixer(
            self.mixer_norm(hidden_states), attention_mask=attention_mask, cache=cache, **packed, **mixer_kwargs
        )
        hidden_states = hidden_states + mixed
        return hidden_states + self.mlp(self.mlp_norm(hidden_states), attention_mask=attention_mask, cache=cache,
                                        **packed)
