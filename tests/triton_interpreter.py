"""Fixes that let Triton's CPU interpreter (``TRITON_INTERPRET=1``) run our kernels. Used by ``tests/conftest.py``
and by the Hub loader subprocess (``tests/hub/load_without_package.py``), which must not import hf_recurrent.

* Triton reads ``TRITON_INTERPRET`` when a ``@triton.jit`` function is defined, and ``import torch`` (2.13) already
  imports Triton: kernels defined afterwards (ours) are interpreted, but the library's own jitted helpers
  (``tl.sum``, ``tl.cumsum``, ``tl.cdiv``...) were defined as compiled functions. The patch lets interpreted kernels
  call them.
* The Triton 3.6 interpreter turns a loop bound read from memory into an int with ``int(array)`` on a one-element
  1-D array, which NumPy >= 2.3 refuses.
* It computes on bfloat16 values as their raw bits (below).

Nothing applies unless ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations


def patch_triton_interpreter() -> None:
    try:
        import numpy as np
        import triton.language as tl
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

    # Triton 3.6's interpreter stores bfloat16 as its raw 16-bit patterns (uint16) and computes on those: products,
    # sums, exponentials and ``tl.dot`` of bfloat16 operands come out as integer arithmetic on the bits. Widen
    # bfloat16 operands to float32, compute, and round a floating result back to bfloat16, as the GPU does.
    builder = interpreter.InterpreterBuilder
    if getattr(builder, "_hf_recurrent_bf16", False) or not all(
        hasattr(builder, name) for name in ("binary_op", "unary_op", "cast_impl", "create_dot", "get_fp32")
    ):
        return
    builder._hf_recurrent_bf16 = True
    comparisons = {np.less, np.greater, np.less_equal, np.greater_equal, np.equal, np.not_equal}

    def widen(self, t):
        return self.cast_impl(t, tl.float32) if t.dtype.scalar == tl.bfloat16 else t

    def narrow(self, t):
        return self.cast_impl(t, tl.bfloat16) if t.dtype.scalar == tl.float32 else t

    original_dot, original_binary, original_unary = builder.create_dot, builder.binary_op, builder.unary_op

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return original_dot(self, widen(self, a), widen(self, b), d, input_precision, max_num_imprecise_acc)

    def binary_op(self, lhs, rhs, op):
        if tl.bfloat16 not in (lhs.dtype.scalar, rhs.dtype.scalar):
            return original_binary(self, lhs, rhs, op)
        out = original_binary(self, widen(self, lhs), widen(self, rhs), op)
        return out if op in comparisons else narrow(self, out)

    def unary_op(self, arg, op):
        if arg.dtype.scalar != tl.bfloat16:
            return original_unary(self, arg, op)
        return narrow(self, original_unary(self, widen(self, arg), op))

    builder.create_dot, builder.binary_op, builder.unary_op = create_dot, binary_op, unary_op
    if not hasattr(builder, "get_bf16"):  # bfloat16 scalar constants (a Python float met by a bfloat16 tensor)
        builder.get_bf16 = lambda self, value: narrow(self, self.get_fp32(value))


