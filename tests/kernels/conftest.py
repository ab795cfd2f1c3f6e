"""Kernel tests run the Triton kernels on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``), also on a
machine with a GPU (these tests build CPU tensors); the interpreter patches live in ``tests/conftest.py``.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
