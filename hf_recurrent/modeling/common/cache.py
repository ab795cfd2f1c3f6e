"""Recurrent state in transformers' own ``DynamicCache`` (one ``LinearAttentionLayer`` per layer).

Each layer's cache entry has numbered slots; every slot holds up to two tensors: a short-convolution tail (or
token-shift buffer), ``[B, D, W-1]``, and a recurrent state of any shape with the batch first. A mixer uses slot
0; a block with a second stateful part (RWKV's channel mix, say) uses slot 1. Beam reordering, ``reset`` and
offloading come from transformers' layer class, which iterates over all slots.

Why these helpers instead of calling ``cache.update_conv_state`` / ``update_recurrent_state`` directly: the layer
marks a slot as holding a previous state only inside ``update_conv_state``, so a mixer without a convolution would
read ``None`` back on every step; ``update_conv_state`` re-concatenates the old tail with the new input, whereas
our convolution already returns the new tail; and ``DynamicCache(config=...)`` creates one slot per layer.
:func:`store_state` writes through the layer's own lazy initialisation (fixed addresses, CUDA-graph friendly),
adds slots on first use and sets the flag.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache


def _ensure_slot(layer, slot: int) -> None:
    while layer.number_of_states <= slot:
        i = layer.number_of_states
        for table in (layer.conv_states, layer.recurrent_states, layer.conv_kernel_size):
            table[i] = None
        for flags in (layer.is_conv_states_initialized, layer.is_recurrent_states_initialized, layer.has_previous_state):
            flags[i] = False
        layer.number_of_states += 1


def load_state(
    cache: Cache | None, layer_idx: int, slot: int = 0
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(conv_tail, recurrent_state)`` of a layer's slot, ``None`` for each that holds nothing yet."""
    if cache is None:
        return None, None
    layer = cache.layers[layer_idx]
    if slot >= layer.number_of_states or not layer.has_previous_state[slot]:
        return None, None
    conv = layer.conv_states[slot] if layer.is_conv_states_initialized[slot] else None
    recurrent = layer.recurrent_states[slot] if layer.is_recurrent_states_initialized[slot] else None
    return conv, recurrent


def store_state(
    cache: Cache | None,
    layer_idx: int,
    conv_tail: torch.Tensor | None = None,
    recurrent_state: torch.Tensor | None = None,
    slot: int = 0,
) -> None:
    """Copy the new states into the cache (no-op for a tensor that already is the cached one, updated in place)."""
    if cache is None:
        return
    layer = cache.layers[layer_idx]
    _ensure_slot(layer, slot)
    if layer.device is None:  # offload/prefetch read it; transformers sets it only from a conv state
        first = conv_tail if conv_tail is not None else recurrent_state
        layer.dtype, layer.device = first.dtype, first.device
    if conv_tail is not None:
        if not layer.is_conv_states_initialized[slot]:
            layer.lazy_initialization(conv_states=conv_tail, state_idx=slot, conv_kernel_size=conv_tail.shape[-1])
        if layer.conv_states[slot] is not conv_tail:
            layer.conv_states[slot].copy_(conv_tail)
    if recurrent_state is not None:
        if not layer.is_recurrent_states_initialized[slot]:
            layer.lazy_initialization(recurrent_states=recurrent_state, state_idx=slot)
        if layer.recurrent_states[slot] is not recurrent_state:
            layer.recurrent_states[slot].copy_(recurrent_state)
    layer.has_previous_state[slot] = True
