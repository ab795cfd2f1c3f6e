"""Model definitions: the shared shell (``common``) and one folder per architecture.

Importing this package imports every architecture folder, each of which registers itself.
"""

from . import gla  # noqa: F401
from .registry import ARCHITECTURES, Architecture

__all__ = ["ARCHITECTURES", "Architecture"]
