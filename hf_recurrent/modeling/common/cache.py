"""Recurrent state in transformers' own ``DynamicCache`` (one ``LinearAttentionLayer`` per layer).

A mixer keeps up to two tensors per layer: the short-convolution tail (``conv_states[0]``, ``[B, D, W-1]``) and
its recurrent state (``recurrent_states[0]``, any shape with the batch first). Beam reordering, ``reset`` and
offloading come from transformers' layer class.

Why these helpers instead of calling ``cache.update_conv_state`` / ``update_recurrent_state`` directly: the layer
marks itself as holding a previous state only inside ``update_conv_state``, so a mixer without a convolution would
read ``None`` back on every step; and ``update_conv_state`` re-concatenates the old tail with the new input,
whereas our convolution already returns the new tail. :func:`store_state` writes both through the layer's own
lazy initialisation (fixed addresses, CUDA-graph friendly) and sets the flag.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache


def load_state(cache: Cache | None, layer_idx: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(conv_tail, recurrent_state)`` of a layer, ``None`` for each that holds nothing yet."""
    if cache is None:
        return None, None
    layer = cache.layers[layer_idx]
    if not layer.has_previous_state[0]:
        return None, None
    conv = layer.conv_states[0] if layer.is_conv_states_initialized[0] else None
    recurrent = layer.recurrent_states[0] if layer.is_recurrent_states_initialized[0] else None
    return conv, recurrent


def store_state(
    cache: Cache | None,
    layer_idx: int,
    conv_tail: torch.Tensor | None = None,
    recurrent_state: torch.Tensor | None = None,
) -> None:
    """Copy the new states into the cache (no-op for a tensor that already is the cached one, updated in place)."""
    if cache is None:
        return
    layer = cache.layers[layer_idx]
    if layer.device is None:  # offload/prefetch read it; transformers sets it only from a conv state
        first = conv_tail if conv_tail is not None else recurrent_state
        layer.dtype, layer.device = first.dtype, first.device
    if conv_tail is not None:
        if not layer.is_conv_states_initialized[0]:
            layer.lazy_initialization(conv_states=conv_tail, conv_kernel_size=conv_tail.shape[-1])
        if layer.conv_states[0] is not conv_tail:
            layer.conv_states[0].copy_(conv_tail)
    if recurrent_state is not None:
        if not layer.is_recurrent_states_initialized[0]:
            layer.lazy_initialization(recurrent_states=recurrent_state)
        if layer.recurrent_states[0] is not recurrent_state:
            layer.recurrent_states[0].copy_(recurrent_state)
    layer.has_previous_state[0] = True
