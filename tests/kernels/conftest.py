"""Kernel tests run the Triton kernels on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``).

The variable must be set before ``triton`` is imported, hence here. The interpreter of Triton 3.6 turns a loop bound
read from memory (``range(n)`` with ``n`` loaded by ``tl.load``) into a Python int with ``int(array)`` on a
one-element 1-D array, which NumPy >= 2.3 refuses; the patch below takes ``.item()`` instead.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")


def _patch_interpreter_index() -> None:
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    original = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    if not getattr(original, "_hf_recurrent_patched", False):
        patched._hf_recurrent_patched = True
        interpreter._patch_lang_tensor = patched


_patch_interpreter_index()
