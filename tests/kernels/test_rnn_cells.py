"""Non-linear cells (LSTM, GRU, sLSTM): Triton kernels (interpreted on the CPU) against the PyTorch reference, and
the reference against independent peers: ``torch.nn.LSTM`` / ``nn.GRU`` and FlashRNN's vanilla PyTorch backend.

``TRITON_INTERPRET=1`` is set in ``conftest.py`` before Triton is imported. Tolerances: float32 on the CPU; the
kernel and the reference sum the recurrent matmul in different orders, differences are ~1e-7 relative, bounded
here at 1e-5 (outputs) and 1e-4 (gradients, which go through T steps of products).
"""

from __future__ import annotations

import os
from types import SimpleNamespace

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from hf_recurrent.kernels.rnn_cells import CELLS, rnn_cell_scan, rnn_cell_step  # noqa: E402

pytest.importorskip("hf_recurrent.kernels.rnn_cells.triton")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _inputs(cell, B, T, H, D, seed=0):
    gen = torch.Generator().manual_seed(seed)
    G, S = CELLS[cell]
    gx = torch.randn(B, T, H, G, D, generator=gen)
    R = torch.randn(H, G, D, D, generator=gen) * D**-0.5
    rb = torch.randn(H, G, D, generator=gen)
    s0 = torch.randn(B, S, H, D, generator=gen)
    if cell == "slstm":  # a state the cell can reach: normaliser >= 1, stabiliser finite
        s0[:, 2] = s0[:, 2].abs() + 1
    return gx, R, rb, s0


PATHS = {  # forward designs of the Triton backend: module knobs of hf_recurrent.kernels.rnn_cells.triton
    "resident": {"RESIDENT": True, "RESIDENT_MAX_D": 256},  # float32 R of heads up to 128 (bf16's default: 128)
    "tiled": {"RESIDENT": False},
    "tiled-columns32": {"RESIDENT": False, "SPLIT_BLOCK_D": 32},  # heads > 64: column tiles of 32 (default 16), reduction of 64
    # The split-resident forward (triton_split), forced where the interpreter never splits heads: a head of one
    # column tile in one launch over the sequence; several column tiles in one launch per step (its docstring).
    "split-resident": {"RESIDENT": False, "SPLIT_RESIDENT": "always"},
    "split-resident-columns32": {"RESIDENT": False, "SPLIT_RESIDENT": "always", "SPLIT_BLOCK_D": 32},
}


@pytest.fixture
def kernel_path(request, monkeypatch) -> SimpleNamespace:
    """Sets the forward design ``request.param`` (a key of PATHS); ``.tiles`` records the tile ``BD`` of each call
    that went to the resident forward, ``.split_tiles`` the column tile ``BN`` of each that went to the
    split-resident one, ``.split_backward_tiles`` that of each backward on the split-resident backward."""
    from hf_recurrent.kernels.rnn_cells import triton as triton_impl

    for name, value in PATHS[request.param].items():
        monkeypatch.setattr(triton_impl, name, value)
    path = SimpleNamespace(name=request.param, tiles=[], split_tiles=[], split_backward_tiles=[])
    resident_forward = triton_impl.resident_forward
    split_resident_forward = triton_impl.split_resident_forward
    split_resident_backward = triton_impl.split_resident_backward

    def spy(cell, gx, R, rbias, state0, keep, store_all, block_d, num_warps):
        path.tiles.append(block_d)
        return resident_forward(cell, gx, R, rbias, state0, keep, store_all, block_d, num_warps)

    def split_spy(*args, **kwargs):
        path.split_tiles.append(kwargs["BN"])
        return split_resident_forward(*args, **kwargs)

    def split_backward_spy(*args, **kwargs):
        path.split_backward_tiles.append(kwargs["BN"])
        return split_resident_backward(*args, **kwargs)

    monkeypatch.setattr(triton_impl, "resident_forward", spy)
    monkeypatch.setattr(triton_impl, "split_resident_backward", split_backward_spy)
    monkeypatch.setattr(triton_impl, "split_resident_forward", split_spy)
    return path


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize(
    "B,T,H,D,padded,kernel_path",
    [(3, 6, 2, 20, False, "resident"), (3, 6, 2, 20, True, "resident"), (3, 6, 2, 20, True, "tiled"),
     (2, 5, 1, 72, True, "resident"), (2, 5, 1, 72, True, "tiled"), (2, 5, 1, 72, True, "tiled-columns32"),
     (3, 6, 2, 20, True, "split-resident"), (2, 5, 2, 72, True, "split-resident"),
     (2, 5, 1, 72, True, "split-resident-columns32"), (2, 4, 1, 96, True, "split-resident")],
    ids=["one-tile", "one-tile-padded", "one-tile-padded-tiled",  # D = 20 runs in a masked tile of 32
         "D72-padded", "D72-padded-tiled", "D72-padded-columns32",  # resident: a masked tile of 128; tiled: 5
         # column tiles of 16 (or 3 of 32, the last masked) by 2 reduction tiles of 64. Split-resident: D = 20 one
         # column tile of 32 (one launch for the sequence); D = 72 (two heads) 5 column tiles of 16, or 3 of 32,
         # each by one masked key tile of 128 (one launch per step); D = 96: 6 column tiles of 16 by 3 unmasked key
         # tiles of 32
         "one-tile-padded-split-resident", "D72-padded-split-resident", "D72-padded-split-resident-columns32",
         "D96-padded-split-resident"],
    indirect=["kernel_path"],
)
def test_triton_matches_reference_forward_and_gradients(cell, B, T, H, D, padded, kernel_path):
    """Outputs, final state and every gradient (``gx``, ``R``, the recurrent bias, the initial state) against the
    reference, with padding (left and a gap) and a recurrent bias on every cell; the inference forward (no states
    kept for a backward) gives the same outputs and final state as the training one."""
    gx, R, rb, s0 = _inputs(cell, B, T, H, D)
    keep = None
    if padded:
        keep = torch.ones(B, T)
        keep[0, :2] = 0  # left padding
        keep[1, 3] = 0  # a gap
    results = []
    for backend in ("reference", "triton"):
        args = [t.detach().clone().requires_grad_() for t in (gx, R, rb, s0)]
        y, final = rnn_cell_scan(cell, *args[:3], initial_state=args[3], keep=keep, output_final_state=True,
                                 backend=backend)
        weights = torch.linspace(-1, 1, y.numel()).view_as(y)
        loss = (y * weights).sum() + (final[:, :3] * 0.7).sum()  # the stabiliser m carries no gradient
        results.append((y, final, *torch.autograd.grad(loss, args)))
    ref, tri = results
    assert _rel(tri[0], ref[0]) < 1e-5 and _rel(tri[1], ref[1]) < 1e-5
    for a, b in zip(tri[2:], ref[2:]):
        assert _rel(a, b) < 1e-4
    if padded:  # fully padded prefix: the state is exactly the initial one, the outputs repeat its y
        assert torch.equal(tri[0][0, :2].float(), s0[0, 0].expand(2, H, D))
    with torch.no_grad():
        y, final = rnn_cell_scan(cell, gx, R, rb, initial_state=s0, keep=keep, output_final_state=True,
                                 backend="triton")
    assert torch.equal(y, tri[0]) and torch.equal(final, tri[1])
    block = max(16, 1 << (D - 1).bit_length())
    assert kernel_path.tiles == ([block] * 2 if kernel_path.name == "resident" else [])  # training, inference
    split_block = {"split-resident": 16 if D > 64 else block, "split-resident-columns32": 32 if D > 64 else block}.get(
        kernel_path.name)
    assert kernel_path.split_tiles == ([split_block] * 2 if split_block else [])
    assert kernel_path.split_backward_tiles == ([split_block] if split_block else [])


def test_forward_design_by_head_size_and_dtype(monkeypatch):
    """Default knobs: the resident forward up to heads of 128 for 16-bit R (64 for float32), its warps, the
    column tile of wider heads (32; split over programs only on a GPU), and which split heads take the
    split-resident forward (16-bit R, slices up to 192 KiB: bf16 heads of 768 in tiles of 32; float32 never)."""
    from hf_recurrent.kernels.rnn_cells import triton as triton_impl

    bf16, fp32 = torch.empty(0, dtype=torch.bfloat16), torch.empty(0)
    assert [triton_impl._resident_block(D, bf16) for D in (8, 64, 100, 128, 129)] == [16, 64, 128, 128, None]
    assert [triton_impl._resident_block(D, fp32) for D in (64, 65)] == [64, None]
    assert [triton_impl.resident_warps(block, 2) for block in (16, 64, 128)] == [4, 4, 8]
    assert triton_impl.resident_warps(64, 4) == 4
    monkeypatch.setattr(triton_impl, "RESIDENT", False)
    assert triton_impl._resident_block(64, bf16) is None
    assert triton_impl.SPLIT_BLOCK_D == 16 and triton_impl.SPLIT_RESIDENT is True
    assert triton_impl._launch_shape(16, 8, 1, 768, torch.device("cpu"))[1:] == (768, 1, 16, 16, 64)
    assert triton_impl._launch_shape(16, 1, 1, 768, torch.device("cpu"))[1:] == (768, 1, 16, 64, 64)  # one step
    monkeypatch.setattr(triton_impl, "SPLIT_BLOCK_D", 64)
    assert triton_impl._launch_shape(16, 8, 1, 768, torch.device("cpu"))[1:] == (768, 1, 16, 64, 64)
    monkeypatch.setattr(triton_impl, "SPLIT_BLOCK_D", 32)
    assert triton_impl._launch_shape(16, 8, 1, 40, torch.device("cpu"))[1:] == (64, 1, 16, 64, 64)  # one tile
    monkeypatch.setattr(triton_impl, "SPLIT_BLOCK_D", 48)
    with pytest.raises(ValueError, match="SPLIT_BLOCK_D"):
        triton_impl._launch_shape(16, 8, 1, 768, torch.device("cpu"))
    # Split-resident: a GPU's launch of a split head (the CPU never splits), by head size, dtype and column tile.
    Launch = triton_impl._Launch

    def split_resident(D, R, BN, split=True):
        tiles = -(-D // BN)
        return triton_impl._split_resident(D, R, Launch((1, 1, tiles if split else 1), BN, tiles if split else 1,
                                                        16, BN, 64))

    assert [split_resident(D, bf16, 32) for D in (256, 768)] == [True, True]
    assert [split_resident(D, bf16, 64) for D in (256, 768)] == [True, False]  # 768 x 4 x 64 x 2: 384 KiB
    assert [split_resident(D, fp32, BN) for D, BN in ((256, 32), (768, 16))] == [False, False]
    assert not split_resident(768, bf16, 32, split=False)  # not split: the tiled forward
    assert triton_impl.split_resident_bytes(768, 32, 64, 2) == 192 * 1024
    assert [triton_impl.split_resident_warps(BN) for BN in (16, 32, 64)] == [4, 8, 16]
    # key tiles: the largest power of two up to 256 dividing the head; masked tiles where none of 16 or more does
    assert [triton_impl.split_resident_key_block(D) for D in (768, 384, 1024, 80, 200, 40)] == [256, 128, 256, 16,
                                                                                              256, 64]
    monkeypatch.setattr(triton_impl, "SPLIT_RESIDENT", False)
    assert not split_resident(256, bf16, 32)
    monkeypatch.setattr(triton_impl, "SPLIT_RESIDENT", "always")
    assert split_resident(768, fp32, 64, split=False)


@pytest.mark.parametrize("kernel_path", ["resident", "tiled", "split-resident"], indirect=True)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_triton_bf16_inputs(cell, kernel_path):
    """bfloat16 ``gx``, ``R`` and the recurrent bias (a bf16 model's; the state float32), outputs and every gradient
    against the float32 reference on the same rounded inputs. Besides ``y`` stored in bf16, the incoming ``dy`` in bf16
    (autograd casts it to ``y``'s dtype) and each gradient stored in bf16, the recurrent matmul runs in ``R``'s dtype:
    ``y_{t-1}`` (forward) and ``dP`` (backward) are rounded to bf16 before each step's product, float32-accumulated.
    Each rounding is ~2^-9 relative (bf16 has 8 significant bits), a few in series, which the gates do not amplify
    over these 6 steps: 2e-2, the bound of the GLA kernel's bf16 test."""
    gx, R, rb, s0 = _inputs(cell, 3, 6, 2, 20, seed=2)
    gx, R, rb = gx.bfloat16(), R.bfloat16(), rb.bfloat16()
    has_rb = cell == "gru"
    results = []
    for backend, dtype in (("reference", torch.float32), ("triton", torch.bfloat16)):
        args = [t.to(t.dtype if t is s0 else dtype).detach().clone().requires_grad_() for t in (gx, R, rb, s0)]
        y, final = rnn_cell_scan(cell, args[0], args[1], args[2] if has_rb else None, initial_state=args[3],
                                 output_final_state=True, backend=backend)
        weights = torch.linspace(-1, 1, y.numel()).view_as(y)
        loss = (y * weights).sum() + (final[:, :3] * 0.7).sum()  # the stabiliser m carries no gradient
        grads = torch.autograd.grad(loss, [a for i, a in enumerate(args) if i != 2 or has_rb])
        results.append((y, final, *grads))
    ref, tri = results
    names = ["y", "final_state", "dgx", "dR"] + (["drbias"] if has_rb else []) + ["dinitial_state"]
    assert len(tri) == len(names)
    for name, a, b in zip(names, tri, ref):
        assert a.dtype == (torch.float32 if name in ("final_state", "dinitial_state") else torch.bfloat16), name
        assert torch.isfinite(a).all(), name
        assert _rel(a, b) < 2e-2, f"{name}: relative error {_rel(a, b):.2e}"
    assert bool(kernel_path.tiles) == (kernel_path.name == "resident")
    assert bool(kernel_path.split_tiles) == (kernel_path.name == "split-resident")


@pytest.mark.parametrize("kernel_path", ["resident", "tiled", "split-resident"], indirect=True)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_step_equals_scan_on_both_backends(cell, kernel_path):
    gx, R, rb, s0 = _inputs(cell, 2, 4, 2, 16, seed=1)
    rb = rb if cell == "gru" else None
    full, final = rnn_cell_scan(cell, gx, R, rb, initial_state=s0, output_final_state=True, backend="reference")
    for backend in ("reference", "triton"):
        state, ys = s0, []
        for t in range(4):
            y, state = rnn_cell_step(cell, gx[:, t], R, rb, state, backend=backend)
            ys.append(y)
        torch.testing.assert_close(torch.stack(ys, 1), full, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(state, final, atol=1e-6, rtol=1e-5)
    assert kernel_path.tiles == ([16] * 4 if kernel_path.name == "resident" else [])
    assert kernel_path.split_tiles == ([16] * 4 if kernel_path.name == "split-resident" else [])


@pytest.mark.parametrize("cell,module", [("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)])
def test_reference_with_one_head_is_torch_rnn(cell, module):
    torch.manual_seed(0)
    D, G = 12, CELLS[cell][0]
    rnn = module(D, D, batch_first=True)
    x = torch.randn(2, 7, D)
    expected, _ = rnn(x)
    gx = torch.nn.functional.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0).view(2, 7, 1, G, D)
    R = rnn.weight_hh_l0.detach().view(1, G, D, D).transpose(2, 3)
    rb = rnn.bias_hh_l0.detach().view(1, G, D)
    if cell == "lstm":
        gx, rb = gx + rb[None, None], None
    y, _ = rnn_cell_scan(cell, gx.detach(), R, rb, backend="reference")
    torch.testing.assert_close(y[:, :, 0], expected.detach(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "slstm"])
def test_reference_matches_flashrnn_vanilla_backend(cell):
    """FlashRNN's own PyTorch loop (``backend="vanilla"``): inputs ``[B,T,G,H,D]``, R ``[G,H,D_out,D_in]``."""
    flashrnn = pytest.importorskip("flashrnn")
    gen = torch.Generator().manual_seed(3)
    B, T, H, D, G = 2, 9, 2, 8, 4
    wx = torch.randn(B, T, G, H, D, generator=gen)
    R = torch.randn(G, H, D, D, generator=gen) * D**-0.5
    b = torch.randn(G, H, D, generator=gen)
    states, last = flashrnn.flashrnn(wx, R, b, function=cell, backend="vanilla", dtype="float32")
    gx = (wx + b[None, None]).permute(0, 1, 3, 2, 4)  # [B, T, H, G, D]
    y, final = rnn_cell_scan(cell, gx, R.permute(1, 0, 3, 2), None, output_final_state=True, backend="reference")
    torch.testing.assert_close(y, states[0], atol=1e-6, rtol=1e-5)  # states: [S, B, T, H, D]
    torch.testing.assert_close(final, last[:, :, 0].transpose(0, 1), atol=1e-6, rtol=1e-5)


def test_rejects_bad_shapes_and_cells():
    gx, R, rb, s0 = _inputs("lstm", 2, 3, 2, 8)
    with pytest.raises(ValueError, match="unknown cell"):
        rnn_cell_scan("elman", gx, R)
    with pytest.raises(ValueError, match="gx must be"):
        rnn_cell_scan("gru", gx, R)
    with pytest.raises(ValueError, match="R must be"):
        rnn_cell_scan("lstm", gx, R[:, :, :4])
    with pytest.raises(ValueError, match="initial_state"):
        rnn_cell_scan("lstm", gx, R, initial_state=s0[:, :1])
    with pytest.raises(ValueError, match="keep"):
        rnn_cell_scan("lstm", gx, R, keep=torch.ones(2, 4))
