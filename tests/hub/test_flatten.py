"""The import rewriting of the export, on a synthetic module: every form, and what transformers' loader sees."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from transformers.dynamic_module_utils import get_imports, get_relative_imports

from hf_recurrent.hub import ExportError
from hf_recurrent.hub.flatten import _Module, collect_modules, flatten_module

SOURCE = '''\
"""A module of a package ``hf_recurrent.fake``."""

from __future__ import annotations

import torch
import triton
from . import sub as s, helper
from ..pkg.inner import thing as t, other


def f():
    from .sub import x
    if x:
        import triton.language as tl  # the Triton backend only
    try:
        import triton
    except ImportError:
        pass
    return s, helper, t, other, tl
'''

EXPECTED = '''\
# header
"""A module of a package ``hf_recurrent.fake``."""

from __future__ import annotations

import torch
try:  # optional package: transformers' check_imports skips imports inside try
    import triton
except ImportError:
    raise
from .fake import helper
from .fake_sub import __name__ as _fake_sub_name  # lets the loader find it
from . import fake_sub as s
from .pkg_inner import thing as t, other


def f():
    from .fake_sub import x
    if x:
        try:  # optional package: transformers' check_imports skips imports inside try
            import triton.language as tl  # the Triton backend only
        except ImportError:
            raise
    try:
        import triton
    except ImportError:
        pass
    return s, helper, t, other, tl
'''


def _modules(tmp_path: Path, source: str) -> tuple[_Module, dict[str, _Module]]:
    (tmp_path / "mod.py").write_text(source)
    mod = _Module("hf_recurrent.fake.mod", tmp_path / "mod.py", False)
    others = [_Module("hf_recurrent.fake", tmp_path / "__init__.py", True),
              _Module("hf_recurrent.fake.sub", tmp_path / "sub.py", False),
              _Module("hf_recurrent.pkg.inner", tmp_path / "inner.py", False)]
    return mod, {m.name: m for m in [mod, *others]}


def test_every_import_form_is_rewritten_to_a_same_folder_import(tmp_path):
    mod, modules = _modules(tmp_path, SOURCE)
    flat = flatten_module(mod, modules, "# header\n")
    assert flat == EXPECTED
    compile(flat, "flat.py", "exec")
    (tmp_path / "flat.py").write_text(flat)
    # what transformers' remote-code loader follows (regex) and checks (ast, outside try blocks)
    assert sorted(get_relative_imports(tmp_path / "flat.py")) == ["fake", "fake_sub", "pkg_inner"]
    assert get_imports(tmp_path / "flat.py") == ["__future__", "torch"]


@pytest.mark.parametrize("source,message", [
    ("x = 1; from . import sub\n", "sharing its line"),
    ("from . import sub; x = 1\n", "sharing its line"),
    ("import hf_recurrent.kernels\n", "cannot be flattened"),
    ("from .... import x\n", "above the hf_recurrent package"),
])
def test_unrewritable_imports_are_refused(tmp_path, source, message):
    mod, modules = _modules(tmp_path, textwrap.dedent(source))
    with pytest.raises(ExportError, match=message):
        flatten_module(mod, modules, "")


def test_collect_follows_relative_imports_from_the_real_package():
    modules = collect_modules(["hf_recurrent.modeling.gla.modeling_gla"])
    assert {"hf_recurrent.modeling.gla.configuration_gla", "hf_recurrent.modeling.common",
            "hf_recurrent.kernels.linear_attention.reference", "hf_recurrent.kernels.linear_attention.triton",
            "hf_recurrent.kernels.backend"} <= set(modules)
    assert "hf_recurrent.modeling.registry" not in modules and "hf_recurrent" not in modules
    with pytest.raises(ExportError, match="cannot find the source"):
        collect_modules(["hf_recurrent.no_such_module"])
