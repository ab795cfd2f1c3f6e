"""Triton backend of gated linear attention: the chunked op (forward and backward) and the fused decode step.

See :mod:`.triton_chunk` and :mod:`.triton_step` for the kernels and their maths.
"""

from __future__ import annotations

from .triton_chunk import chunk_gla
from .triton_step import recurrent_gla_step

__all__ = ["chunk_gla", "recurrent_gla_step"]
