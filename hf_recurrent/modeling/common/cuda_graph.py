"""One decode step captured as a CUDA graph and replayed for every generated token.

At batch 1 a recurrent model's decode step is hundreds of tiny kernels; launching them from Python costs more than
running them. Every tensor the step touches has a fixed address — the weights, and the cache's state tensors, which
the mixers update in place (``store_state`` copies into the cache's own buffers; the decode kernels write the state
in place) — so the whole step can be captured once and replayed with a new input token.

Beam search replaces state tensors (``reorder_cache`` does ``index_select``); before each replay the runner copies
such a replaced tensor into its captured buffer and puts the buffer back in the cache, so reordering stays correct.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from transformers.cache_utils import Cache


def _state_tensors(cache: Cache) -> list[tuple[object, str, int, torch.Tensor]]:
    """Every state tensor the cache holds, as ``(layer, table name, slot, tensor)``."""
    found = []
    for layer in cache.layers:
        for table, flags in (("conv_states", "is_conv_states_initialized"),
                             ("recurrent_states", "is_recurrent_states_initialized")):
            for slot, initialised in getattr(layer, flags).items():
                if initialised:
                    found.append((layer, table, slot, getattr(layer, table)[slot]))
    return found


class DecodeGraph:
    """A captured ``step(input_ids [B, 1], cache) -> logits [B, 1, V]`` bound to one cache and batch size."""

    def __init__(self, step: Callable[[torch.Tensor, Cache], torch.Tensor], input_ids: torch.Tensor, cache: Cache,
                 key: tuple) -> None:
        self.key = key
        self._cache = weakref.ref(cache)
        self.static_ids = input_ids.clone()
        self.buffers = _state_tensors(cache)
        snapshot = [t.clone() for *_, t in self.buffers]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: compiles kernels, creates library handles; advances the state
            step(self.static_ids, cache)
        torch.cuda.current_stream().wait_stream(side)
        for (*_, t), saved in zip(self.buffers, snapshot):
            t.copy_(saved)  # undo the warm-up step
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # recorded, not run
            self.static_logits = step(self.static_ids, cache)
        if [t for *_, t in _state_tensors(cache)] != [t for *_, t in self.buffers]:
            raise RuntimeError("the decode step allocated new state tensors; it cannot be replayed as a graph")

    def serves(self, cache: Cache, key: tuple) -> bool:
        return self._cache() is cache and key == self.key

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        for layer, table, slot, buffer in self.buffers:
            current = getattr(layer, table)[slot]
            if current is not buffer:  # replaced by beam reordering: move the values into the captured buffer
                buffer.copy_(current)
                getattr(layer, table)[slot] = buffer
        self.static_ids.copy_(input_ids)
        self.graph.replay()
        return self.static_logits.clone()
