"""Gated RNN kernels on a CUDA GPU: the fused LSTM / GRU / sLSTM kernel and the element-wise linear scan against
the PyTorch reference at real sizes, bf16 and float32; the LSTM model on Triton against torch.nn.LSTM (cuDNN).

Cells: hidden 768 in heads of 64, 128, 256 and 768 (FlashRNN's setup), B = 16, T = 256; the reference runs in
float32 on the same (bf16-rounded) inputs. Tolerances on ``|a - b| / |b|``: float32 1e-4 (IEEE dots in the kernel,
summation order differs), bf16 3e-2 (the kernel feeds y_{t-1} to the recurrent matmul in bf16 at every step, the
reference keeps float32; the rounding compounds over T steps); gradients twice that (sums over B and T). The forward
designs (module knobs of ``hf_recurrent.kernels.rnn_cells.triton``): the defaults at every head size, bf16 on the
alternatives ``benchmarks/bench_rnn.py`` times, and the split-resident forward of split heads (256, 768) in column
tiles of 16 and 32, bf16 and float32.
"""

from __future__ import annotations

import pytest
import torch

from hf_recurrent.kernels.linear_scan import linear_scan
from hf_recurrent.kernels.rnn_cells import CELLS, rnn_cell_scan

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TOL = {torch.bfloat16: 3e-2, torch.float32: 1e-4}


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def _check_cell(cell, head_dim, dtype):
    B, T, hidden = 16, 256, 768
    H, G = hidden // head_dim, CELLS[cell][0]
    gen = torch.Generator(device="cuda").manual_seed(0)
    gx = torch.randn(B, T, H, G, head_dim, device="cuda", generator=gen).to(dtype)
    R = (torch.randn(H, G, head_dim, head_dim, device="cuda", generator=gen) * head_dim**-0.5).to(dtype)
    rb = torch.randn(H, G, head_dim, device="cuda", generator=gen).to(dtype) if cell == "gru" else None
    keep = torch.ones(B, T, device="cuda")
    keep[:4, :17] = 0  # left padding on some rows
    dy = torch.randn(B, T, H, head_dim, device="cuda", generator=gen).to(dtype)

    def run(backend, upcast):
        leaves = [None if t is None else (t.float() if upcast else t).detach().requires_grad_() for t in (gx, R, rb)]
        y, final = rnn_cell_scan(cell, *leaves, keep=keep, output_final_state=True, backend=backend)
        (y * dy.to(y.dtype)).sum().float().add(final[:, :2].sum()).backward()
        return [y, final] + [t.grad for t in leaves if t is not None]

    names = ["y", "final", "dgx", "dR", "drbias"]
    errs = {n: _rel(a, b) for n, a, b in zip(names, run("triton", False), run("reference", True))}
    print(f"\n{cell} D={head_dim} {dtype}: " + " ".join(f"{n}={e:.1e}" for n, e in errs.items()))
    for name, err in errs.items():
        assert err < TOL[dtype] * (1 if name in ("y", "final") else 2), (name, err)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("head_dim", [64, 128, 256, 768])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_cell_kernel_matches_reference(cell, head_dim, dtype):
    """Default designs: the register-resident forward for heads of 64 (and 128 in bf16), split above: bf16 on the
    split-resident forward (column tiles of 32), float32 on the tiled one."""
    _check_cell(cell, head_dim, dtype)


OTHER_PATHS = {  # module knobs of hf_recurrent.kernels.rnn_cells.triton
    "tiled": {"RESIDENT": False},
    "resident-16warps": {"RESIDENT_NUM_WARPS": 16},
    "columns16": {"RESIDENT": False, "SPLIT_RESIDENT": False, "SPLIT_BLOCK_D": 16},
    "columns32": {"RESIDENT": False, "SPLIT_RESIDENT": False, "SPLIT_BLOCK_D": 32},
}


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize(
    "head_dim,path",
    [(64, "tiled"), (128, "tiled"), (128, "resident-16warps"), (128, "columns16"), (256, "columns16"),
     (256, "columns32"), (768, "columns16"), (768, "columns32")],
)
def test_cell_kernel_other_designs(cell, head_dim, path, monkeypatch):
    """bf16 on the designs the benchmark sweeps besides the defaults: the tiled forward for one-tile heads, the
    resident one at 16 warps, and split heads on the tiled forward in column tiles of 16 or 32 (forward and
    backward)."""
    from hf_recurrent.kernels.rnn_cells import triton as triton_impl

    for name, value in OTHER_PATHS[path].items():
        monkeypatch.setattr(triton_impl, name, value)
    _check_cell(cell, head_dim, torch.bfloat16)


@pytest.mark.parametrize(
    "head_dim,columns,dtype",
    [(256, 16, torch.bfloat16), (256, 32, torch.bfloat16), (768, 16, torch.bfloat16), (768, 32, torch.bfloat16),
     (256, 16, torch.float32), (256, 32, torch.float32)],
    ids=["256-16-bf16", "256-32-bf16", "768-16-bf16", "768-32-bf16", "256-16-fp32", "256-32-fp32"],
)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_cell_kernel_split_resident(cell, head_dim, columns, dtype, monkeypatch):
    """The split-resident forward and backward (each program's slice of R loaded once, a grid barrier per step) on
    split heads, training and inference. bf16 is the default design; float32 (by default on the
    tiled forward) is forced (``SPLIT_RESIDENT = "always"``) at heads of 256, where its slice fits a block's shared
    memory (at 768 it does not: the call falls back to the tiled forward, see ``_fits_on_chip``)."""
    from hf_recurrent.kernels.rnn_cells import triton as triton_impl

    monkeypatch.setattr(triton_impl, "SPLIT_RESIDENT", True if dtype == torch.bfloat16 else "always")
    monkeypatch.setattr(triton_impl, "SPLIT_BLOCK_D", columns)
    calls = []
    forward = triton_impl.split_resident_forward

    def spy(*args, **kwargs):
        calls.append((kwargs["BN"], kwargs["split"]))
        return forward(*args, **kwargs)

    backward_calls = []
    backward = triton_impl.split_resident_backward

    def backward_spy(*args, **kwargs):
        backward_calls.append((kwargs["BN"], kwargs["split"]))
        return backward(*args, **kwargs)

    monkeypatch.setattr(triton_impl, "split_resident_forward", spy)
    monkeypatch.setattr(triton_impl, "split_resident_backward", backward_spy)
    _check_cell(cell, head_dim, dtype)  # training: every state and pre-activation stored
    # float32 R keeps the tiled backward (its slice and staged dP tiles can pass a block's shared memory)
    assert calls == [(columns, True)] and backward_calls == ([(columns, True)] if dtype == torch.bfloat16 else [])
    # Inference: only y exchanged through memory each step, the final state stored once at the end.
    B, T, H, G = 16, 256, 768 // head_dim, CELLS[cell][0]
    gen = torch.Generator(device="cuda").manual_seed(4)
    gx = torch.randn(B, T, H, G, head_dim, device="cuda", generator=gen).to(dtype)
    R = (torch.randn(H, G, head_dim, head_dim, device="cuda", generator=gen) * head_dim**-0.5).to(dtype)
    keep = torch.ones(B, T, device="cuda")
    keep[:4, :17] = 0
    with torch.no_grad():
        y, final = rnn_cell_scan(cell, gx, R, keep=keep, output_final_state=True, backend="triton")
        y_ref, final_ref = rnn_cell_scan(cell, gx.float(), R.float(), keep=keep, output_final_state=True,
                                         backend="reference")
    assert calls == [(columns, True)] * 2
    assert _rel(y, y_ref) < TOL[dtype] and _rel(final[:, :3], final_ref[:, :3]) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("T", [512, 4096])
def test_linear_scan_kernel_matches_reference(T, dtype):
    B, H, D = 4, 1, 1536
    gen = torch.Generator(device="cuda").manual_seed(1)
    log_a = (-torch.rand(B, T, H, D, device="cuda", generator=gen) * 0.1).to(dtype)
    b = torch.randn(B, T, H, D, device="cuda", generator=gen).to(dtype)
    dh = torch.randn(B, T, H, D, device="cuda", generator=gen).to(dtype)

    def run(backend, upcast):
        leaves = [(t.float() if upcast else t).detach().requires_grad_() for t in (log_a, b)]
        h, final = linear_scan(*leaves, output_final_state=True, backend=backend)
        (h * dh.to(h.dtype)).sum().float().add(final.sum()).backward()
        return [h, final] + [t.grad for t in leaves]

    tol = {torch.bfloat16: 1e-2, torch.float32: 1e-5}[dtype]
    for name, a, b_ in zip(["h", "final", "dlog_a", "db"], run("triton", False), run("reference", True)):
        assert _rel(a, b_) < (tol if name in ("h", "final", "db") else 4 * tol), name


def test_lstm_layer_on_triton_matches_cudnn():
    """A converted-style one-head LSTM layer (hidden 256) on our kernel against cuDNN's, float32."""
    torch.manual_seed(0)
    rnn = torch.nn.LSTM(256, 256, batch_first=True).cuda()
    x = torch.randn(8, 300, 256, device="cuda")
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        expected, (h_n, c_n) = rnn(x)
    gx = torch.nn.functional.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0).view(8, 300, 1, 4, 256)
    R = rnn.weight_hh_l0.view(1, 4, 256, 256).transpose(2, 3)
    y, final = rnn_cell_scan("lstm", gx, R, output_final_state=True, backend="triton")
    assert _rel(y[:, :, 0], expected) < 1e-4
    assert _rel(final[:, 1, 0], c_n[0]) < 1e-4


@pytest.mark.parametrize("head_dim,resident", [(64, True), (64, False), (768, True)], ids=["64", "64-tiled", "768"])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_decode_step_matches_reference(cell, head_dim, resident, monkeypatch):
    """The one-step path (the fused kernel at T = 1: resident or tiled for D = 64, split over programs for D = 768)
    from a mid-sequence state."""
    from hf_recurrent.kernels.rnn_cells import rnn_cell_step
    from hf_recurrent.kernels.rnn_cells import triton as triton_impl

    monkeypatch.setattr(triton_impl, "RESIDENT", resident)

    B, H, G = 16, 768 // head_dim, CELLS[cell][0]
    gen = torch.Generator(device="cuda").manual_seed(2)
    gx = torch.randn(B, 8, H, G, head_dim, device="cuda", generator=gen)
    R = torch.randn(H, G, head_dim, head_dim, device="cuda", generator=gen) * head_dim**-0.5
    _, state = rnn_cell_scan(cell, gx[:, :7], R, None, output_final_state=True, backend="reference")
    y_tri, new_tri = rnn_cell_step(cell, gx[:, 7], R, None, state.clone(), backend="triton")
    y_ref, new_ref = rnn_cell_step(cell, gx[:, 7], R, None, state.clone(), backend="reference")
    assert _rel(y_tri, y_ref) < 1e-4 and _rel(new_tri[:, :3], new_ref[:, :3]) < 1e-4  # m: equal, or both 0


@pytest.mark.parametrize("arch", ["lstm", "slstm", "mingru"])
def test_model_on_triton_matches_reference_backend(arch, monkeypatch):
    """A small model on the GPU: logits on Triton equal the reference backend's; greedy generation agrees."""
    from hf_recurrent.modeling.registry import ARCHITECTURES

    spec = ARCHITECTURES[arch]
    torch.manual_seed(0)
    config = spec.config_class(**{**spec.test_configs[next(iter(spec.test_configs))], "hidden_size": 256,
                                  "initializer_range": 0.05})
    model = spec.causal_lm_class(config).cuda().eval()
    ids = torch.randint(3, config.vocab_size, (4, 300), device="cuda")
    outs = {}
    for backend in ("triton", "reference"):
        monkeypatch.setenv("HF_RECURRENT_BACKEND", backend)
        with torch.no_grad():
            outs[backend] = (model(ids).logits, model.generate(ids[:, :20], max_new_tokens=16, do_sample=False))
    assert _rel(outs["triton"][0], outs["reference"][0]) < 1e-4
    assert outs["triton"][1].tolist() == outs["reference"][1].tolist()
