"""Model definitions: the shared shell (``common``) and one folder per architecture.

Importing this package imports every architecture folder, each of which registers itself.
"""

from . import gla  # noqa: F401
from . import mamba  # noqa: F401
from . import gateloop  # noqa: F401
from . import mamba2  # noqa: F401
from . import retnet  # noqa: F401
from . import rwkv4  # noqa: F401
from . import rwkv7  # noqa: F401
from . import minrnn  # noqa: F401
from . import rnn  # noqa: F401
from .registry import ARCHITECTURES, Architecture

__all__ = ["ARCHITECTURES", "Architecture"]
