"""One decode step captured as a CUDA graph and replayed for every generated token.

At batch 1 a recurrent model's decode step is hundreds of small kernels; launching them from Python costs more than
running them. Every tensor the step touches has a fixed address — the weights, and the state tensors, which the
mixers update in place (``store_state`` copies into the cache's own buffers; the decode kernels write the state in
place) — so the whole step can be captured once and replayed with a new input token.

The captured state tensors (the graph's *buffers*) are lent to one cache at a time. A cache whose state tensors
are not the buffers — a new ``generate()`` call's cache, or one whose tensors beam search replaced
(``reorder_cache`` does ``index_select``) — gets its values copied into the buffers and the buffers put in its
place; the cache that held them before gets copies back, so it stays valid. One capture then serves every
``generate()`` call of the same batch size and state layout.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from transformers.cache_utils import Cache

_TABLES = (("conv_states", "is_conv_states_initialized"), ("recurrent_states", "is_recurrent_states_initialized"))


def _state_tensors(cache: Cache) -> dict[tuple[int, str, int], torch.Tensor]:
    """Every state tensor the cache holds, by ``(layer index, table name, slot)``."""
    found = {}
    for index, layer in enumerate(cache.layers):
        for table, flags in _TABLES:
            for slot, initialised in getattr(layer, flags).items():
                if initialised:
                    found[(index, table, slot)] = getattr(layer, table)[slot]
    return found


def _layout(states: dict[tuple[int, str, int], torch.Tensor]) -> list[tuple]:
    return [(where, t.shape, t.dtype, t.device) for where, t in states.items()]


def _put(cache: Cache, where: tuple[int, str, int], tensor: torch.Tensor) -> None:
    index, table, slot = where
    getattr(cache.layers[index], table)[slot] = tensor


class DecodeGraph:
    """A captured ``step(input_ids [B, 1], cache) -> logits [B, 1, V]`` for one batch size and state layout."""

    def __init__(self, step: Callable[[torch.Tensor, Cache], torch.Tensor], input_ids: torch.Tensor, cache: Cache,
                 key: tuple) -> None:
        self.key = key
        self._cache = weakref.ref(cache)
        self.static_ids = input_ids.clone()
        self.buffers = _state_tensors(cache)
        snapshot = {where: t.clone() for where, t in self.buffers.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: compiles kernels, creates library handles; advances the state
            step(self.static_ids, cache)
        torch.cuda.current_stream().wait_stream(side)
        for where, t in self.buffers.items():
            t.copy_(snapshot[where])  # undo the warm-up step
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # recorded, not run
            self.static_logits = step(self.static_ids, cache)
        if any(t is not self.buffers[where] for where, t in _state_tensors(cache).items()):
            raise RuntimeError("the decode step allocated new state tensors; it cannot be replayed as a graph")

    def serves(self, cache: Cache, key: tuple) -> bool:
        return key == self.key and (self._cache() is cache or _layout(_state_tensors(cache)) == _layout(self.buffers))

    def _lend_buffers_to(self, cache: Cache) -> None:
        previous = self._cache()
        if previous is not None and previous is not cache:
            held = _state_tensors(previous)
            for where, buffer in self.buffers.items():
                if held.get(where) is buffer:
                    _put(previous, where, buffer.clone())  # the old cache keeps its own state
        self._cache = weakref.ref(cache)

    def __call__(self, input_ids: torch.Tensor, cache: Cache) -> torch.Tensor:
        if self._cache() is not cache:
            self._lend_buffers_to(cache)
        current = _state_tensors(cache)
        for where, buffer in self.buffers.items():
            if current[where] is not buffer:  # a new cache, or beam reordering replaced the tensor
                buffer.copy_(current[where])
                _put(cache, where, buffer)
        self.static_ids.copy_(input_ids)
        self.graph.replay()
        return self.static_logits.clone()
