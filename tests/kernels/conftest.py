"""Kernel tests run the Triton kernels on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``).

Triton reads the variable when a ``@triton.jit`` function is defined, and ``import torch`` (2.13) already imports
Triton, before this file is read. Kernels defined afterwards (ours, imported by the tests) are interpreted, but the
library's own jitted helpers (``tl.sum``, ``tl.cumsum``, ``tl.cdiv``...) were defined as compiled functions; the
patches below let interpreted kernels call them. A second patch works around the Triton 3.6 interpreter turning a
loop bound read from memory into an int with ``int(array)`` on a one-element 1-D array, which NumPy >= 2.3 refuses.
Neither patch applies when ``TRITON_INTERPRET`` is set to anything but 1 (e.g. on a GPU machine).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")


def _patch_triton_interpreter() -> None:
    try:
        from triton.runtime import interpreter
        from triton.runtime.jit import JITFunction
    except ImportError:
        return
    if getattr(interpreter, "_hf_recurrent_patched", False):
        return
    interpreter._hf_recurrent_patched = True

    def call_interpreted(self, *args, **kwargs):
        fn = self.__dict__.get("_hf_recurrent_interpreted")
        if fn is None:
            fn = self._hf_recurrent_interpreted = interpreter.InterpretedFunction(self.fn)
        return fn(*args, **kwargs)

    JITFunction.__call__ = call_interpreted

    original = interpreter._patch_lang_tensor

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    interpreter._patch_lang_tensor = patch_lang_tensor


if os.environ["TRITON_INTERPRET"] == "1":
    _patch_triton_interpreter()
