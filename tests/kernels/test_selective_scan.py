"""Selective scan: Triton kernels (on the CPU, through Triton's interpreter) against the PyTorch reference.

``TRITON_INTERPRET=1`` is set before Triton is imported. Both kernel designs (``DESIGN = "sequential"``, the
default, and ``"scan"``) are tested. Most tests shrink the tiles to 4 steps (and the scan design's channel blocks
to 4 / 2 channels, the sequential forward's to 4; the sequential backward always owns 32 channels per warp) so
that short sequences cross several tiles; the block sizes are compile-time constants, the code paths are the same.
Shapes cover several time tiles with a ragged last one, channel counts that are not a multiple of the block, a
state size that is not a power of two, packed sequences of unequal lengths (one shorter than a tile), initial and
final states, padded positions (``dt = -inf``), and every optional input switched on and off. Outputs, final
states and the gradients of every input are compared in float32. The sequential design's forward tile
(``SEQ_FWD_BLOCK_T``) is tested shorter and longer than the saved states' interval (``BLOCK_T``), and its
time-parallel chunks (``SEQ_CHUNK``, which the automatic rule never picks on the CPU unless told how many programs
to aim at) are forced on with chunks of 16 or 32 steps.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from hf_recurrent.kernels.selective_scan import reference, selective_scan, selective_scan_step  # noqa: E402

triton_impl = pytest.importorskip("hf_recurrent.kernels.selective_scan.triton")

RTOL = 2e-5  # relative (norm-wise) error; fp32 with different summation orders gives ~1e-7
DESIGNS = ("sequential", "scan")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _inputs(batch, T, D, N, n_states, seed=0, pad=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T, D, generator=g)
    dt = torch.randn(batch, T, D, generator=g) - 1.0
    if pad:  # left padding of 3 steps in the first row: a step of exactly 0
        dt[0, :3] = float("-inf")
    A = -torch.exp(torch.randn(D, N, generator=g) * 0.5)
    B = torch.randn(batch, T, N, generator=g)
    C = torch.randn(batch, T, N, generator=g)
    Dp = torch.randn(D, generator=g)
    z = torch.randn(batch, T, D, generator=g)
    bias = torch.randn(D, generator=g) * 0.5
    h0 = torch.randn(n_states, D, N, generator=g)
    return dict(x=x, dt=dt, A=A, B=B, C=C, D=Dp, z=z, dt_bias=bias, initial_state=h0)


def _run(backend, inputs, drop, softplus, cu_seqlens, seed=1):
    leaves = {k: (None if k in drop else v.clone().requires_grad_(True)) for k, v in inputs.items()}
    y, hT = selective_scan(
        leaves["x"], leaves["dt"], leaves["A"], leaves["B"], leaves["C"], leaves["D"], leaves["z"], leaves["dt_bias"],
        dt_softplus=softplus, initial_state=leaves["initial_state"], output_final_state=True, cu_seqlens=cu_seqlens,
        backend=backend,
    )
    g = torch.Generator().manual_seed(seed)
    dy, dhT = torch.randn(y.shape, generator=g), torch.randn(hT.shape, generator=g)
    used = {k: v for k, v in leaves.items() if v is not None}
    grads = torch.autograd.grad((y * dy).sum() + (hT * dhT).sum(), list(used.values()))
    return {"y": y, "final_state": hT, **{"d" + k: gr for k, gr in zip(used, grads)}}


def _small_tiles(monkeypatch, design: str) -> None:
    monkeypatch.setattr(triton_impl, "DESIGN", design)
    monkeypatch.setattr(triton_impl, "BLOCK_T", 4)
    monkeypatch.setattr(triton_impl, "SEQ_FWD_BLOCK_T", 4)
    monkeypatch.setattr(triton_impl, "SEQ_FWD_BLOCK_D", 4)
    monkeypatch.setattr(triton_impl, "SEQ_BWD_WARPS", 1)
    monkeypatch.setattr(triton_impl, "SEQ_GROUP", 2)
    monkeypatch.setattr(triton_impl, "SCAN_FWD_BLOCK_D", 4)
    monkeypatch.setattr(triton_impl, "SCAN_BWD_BLOCK_D", 2)  # the backward's channel blocks need not match the forward's


@pytest.fixture(params=DESIGNS)
def small_tiles(request, monkeypatch):
    _small_tiles(monkeypatch, request.param)
    return request.param


CASES = {
    "all-inputs": dict(batch=2, T=11, D=6, N=16, drop=(), softplus=True),
    "no-z-no-D-no-bias-no-h0": dict(batch=2, T=9, D=8, N=4, drop=("z", "D", "dt_bias", "initial_state"), softplus=True),
    "no-softplus-N5": dict(batch=1, T=13, D=7, N=5, drop=("z",), softplus=False),
    "padded": dict(batch=2, T=10, D=5, N=8, drop=(), softplus=True, pad=True),
}


def _case_inputs(case):
    spec = dict(CASES[case])
    drop, softplus, pad = spec.pop("drop"), spec.pop("softplus"), spec.pop("pad", False)
    inputs = _inputs(spec["batch"], spec["T"], spec["D"], spec["N"], spec["batch"], pad=pad)
    if not softplus:  # without the softplus the step must be positive already
        inputs["dt"] = inputs["dt"].abs() * 0.3
    return inputs, drop, softplus


@pytest.mark.parametrize("case", CASES)
def test_triton_matches_reference_outputs_and_gradients(case, small_tiles):
    _compare(*_case_inputs(case), None)


@pytest.mark.parametrize("design", DESIGNS)
def test_production_tile_sizes_match_reference(design, monkeypatch):
    """The default tiles as on the GPU (16 steps, the sequential forward 8; sequential: 32 channels per forward
    program, 64 per backward one, scan: 16): 2 tiles (ragged), all inputs; the scan design with 2 channel blocks
    (ragged)."""
    monkeypatch.setattr(triton_impl, "DESIGN", design)
    _compare(_inputs(1, 21, 18, 4, 1, seed=7), (), True, None)


@pytest.mark.parametrize("group", [1, 4])
def test_sequential_backward_group_sizes(group, monkeypatch):
    """States kept per scratch entry: every step's (1) or the whole 4-step tile's (4), besides the default 2."""
    _small_tiles(monkeypatch, "sequential")
    monkeypatch.setattr(triton_impl, "SEQ_GROUP", group)
    _compare(*_case_inputs("all-inputs"), None)


def test_sequential_several_warps_and_channel_blocks(monkeypatch):
    """70 channels: 3 backward programs of 32 (the last ragged), then 2 of 64 (two warps, each summing dB / dC over
    its own 32 channels); 2 channels per thread in the forward (64 channels, 32 threads)."""
    _small_tiles(monkeypatch, "sequential")
    inputs = _inputs(1, 6, 70, 4, 1, seed=8)
    _compare(inputs, (), True, None)
    monkeypatch.setattr(triton_impl, "SEQ_BWD_WARPS", 2)
    monkeypatch.setattr(triton_impl, "SEQ_FWD_BLOCK_D", 64)
    monkeypatch.setattr(triton_impl, "SEQ_FWD_WARPS", 1)
    _compare(inputs, (), True, None)


def test_sequential_state_size_above_16(monkeypatch):
    """N = 20 pads to 32 states: the 64 dB / dC values per step are summed over the channels 32 at a time."""
    _small_tiles(monkeypatch, "sequential")
    _compare(_inputs(1, 6, 5, 20, 1, seed=9), ("z",), True, None)


@pytest.mark.parametrize("fwd_tile,block_t", [(2, 8), (16, 4)], ids=["fwd-tile-below", "fwd-tile-above"])
def test_sequential_forward_tile_differs_from_saved_state_interval(fwd_tile, block_t, monkeypatch):
    """The forward steps tiles of ``SEQ_FWD_BLOCK_T`` and saves every ``BLOCK_T``-th state (the backward's tiles):
    a forward tile shorter (states saved every 4th tile) and longer (4 saved per tile, none past a sequence's end)
    than the interval; packed sequences of 9, 2 and 6 steps."""
    _small_tiles(monkeypatch, "sequential")
    monkeypatch.setattr(triton_impl, "SEQ_FWD_BLOCK_T", fwd_tile)
    monkeypatch.setattr(triton_impl, "BLOCK_T", block_t)
    _compare(_inputs(1, 17, 6, 4, 3, seed=3), (), True, torch.tensor([0, 9, 11, 17]))


def _compare(inputs, drop, softplus, cu_seqlens):
    want = _run("reference", inputs, drop, softplus, cu_seqlens)
    got = _run("triton", inputs, drop, softplus, cu_seqlens)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].shape == want[name].shape, name
        assert torch.isfinite(got[name]).all(), name
        assert _rel(got[name], want[name]) < RTOL, (name, _rel(got[name], want[name]))
    return got


FLOAT32_RESULTS = {"final_state", "dA", "dinitial_state"}  # A and the states are float32 in a bf16 Mamba


@pytest.mark.parametrize("case", ["all-inputs", "no-z-no-D-no-bias-no-h0"])
@pytest.mark.parametrize("design", DESIGNS)
def test_triton_bf16_inputs(design, case, monkeypatch):
    """bfloat16 ``x, dt, B, C, D, z, dt_bias`` as a bf16 Mamba passes them (``A`` and the states float32), outputs
    and every gradient against the float32 reference on the same rounded inputs, both designs, with and without the
    optional inputs. The kernels load bf16 and compute in float32: the roundings are ``y`` stored in bf16, the
    incoming ``dy`` in bf16 (autograd casts it to ``y``'s dtype) and each gradient stored in bf16, each ~2^-9
    relative (bf16 has 8 significant bits), a few in series: 2e-2, the bound of the GLA kernel's bf16 test, also for
    the decay's gradients ``ddt``, ``dA`` (no bf16 intermediate enters them, only ``dy``'s rounding). The final state
    is float32 arithmetic on the same rounded inputs: 1e-5 as in float32 (a state rounded to bf16 would fail)."""
    _small_tiles(monkeypatch, design)
    _compare_bf16(*_case_inputs(case), None)


def _compare_bf16(inputs, drop, softplus, cu_seqlens):
    low = {k: v if k in ("A", "initial_state") else v.bfloat16() for k, v in inputs.items()}
    got = _run("triton", low, drop, softplus, cu_seqlens)
    want = _run("reference", {k: v.float() for k, v in low.items()}, drop, softplus, cu_seqlens)
    assert got.keys() == want.keys()
    for name in want:
        a = got[name]
        assert a.dtype == (torch.float32 if name in FLOAT32_RESULTS else torch.bfloat16), (name, a.dtype)
        assert torch.isfinite(a).all(), name
        bound = 1e-5 if name == "final_state" else 2e-2
        assert _rel(a, want[name]) < bound, f"{name}: relative error {_rel(a, want[name]):.2e}"


@pytest.fixture
def chunk_lengths(monkeypatch):
    """The chunk lengths the sequential design cut its sequences into, forward then backward (none: unchunked)."""
    from hf_recurrent.kernels.selective_scan import triton_chunked

    seen, segments = [], triton_chunked._segments

    def spy(p, L):
        seen.append(L)
        return segments(p, L)

    monkeypatch.setattr(triton_chunked, "_segments", spy)
    return seen


def _chunked(monkeypatch, fwd_tile: int, block_t: int, chunk: int | None) -> None:
    _small_tiles(monkeypatch, "sequential")
    monkeypatch.setattr(triton_impl, "SEQ_FWD_BLOCK_T", fwd_tile)
    monkeypatch.setattr(triton_impl, "BLOCK_T", block_t)
    monkeypatch.setattr(triton_impl, "SEQ_CHUNK", chunk)


CHUNKINGS = [(4, 8, 16), (16, 8, 16), (8, 16, 32)]  # (forward tile, saved-state interval, chunk length)
CHUNKING_IDS = [f"fwd{f}-bt{b}-L{c}" for f, b, c in CHUNKINGS]


@pytest.mark.parametrize(
    "fwd_tile,block_t,chunk,drop",
    [pytest.param(*c, (), id=f"{i}-all-inputs") for c, i in zip(CHUNKINGS, CHUNKING_IDS)]
    + [pytest.param(*CHUNKINGS[0], ("z", "D", "dt_bias", "initial_state"), id=f"{CHUNKING_IDS[0]}-no-optional")],
)
def test_chunked_sequential_matches_reference(fwd_tile, block_t, chunk, drop, monkeypatch, chunk_lengths):
    """Time-parallel chunks, forward and backward: 2 sequences of 37 steps (chunks of 16: 3 each, the last of 5;
    of 32: 2, the last of 5), 6 channels in 2 forward blocks, N = 5; outputs, final state and every gradient."""
    _chunked(monkeypatch, fwd_tile, block_t, chunk)
    _compare(_inputs(2, 37, 6, 5, 2, seed=10), drop, True, None)
    assert chunk_lengths == [chunk, chunk]


@pytest.mark.parametrize("fwd_tile,block_t,chunk", CHUNKINGS[:2], ids=CHUNKING_IDS[:2])
def test_chunked_sequential_packed_sequences(fwd_tile, block_t, chunk, monkeypatch, chunk_lengths):
    """Packed sequences of 9, 2, 0, 29 and 35 steps in chunks of 16 (1, 1, 1 empty, 2 and 3 segments), padded
    positions in the first: outputs, final states, every gradient incl. the initial states'."""
    _chunked(monkeypatch, fwd_tile, block_t, chunk)
    inputs = _inputs(1, 75, 6, 4, 5, seed=11, pad=True)
    _compare(inputs, (), True, torch.tensor([0, 9, 11, 11, 40, 75]))
    assert chunk_lengths == [chunk, chunk]


def test_chunked_sequential_automatic_length(monkeypatch, chunk_lengths):
    """``SEQ_CHUNK = None`` chunks into ``SEQ_CHUNK_AUTO`` steps when the grid has fewer than
    ``SEQ_CHUNK_PROGRAMS`` programs: packed sequences of 50 and 10 steps, 6 channels; the forward's grid is
    2 blocks x 2 sequences, the backward's 1 x 2. Under 5: both chunk (8 steps); under 3: the backward only; on the
    CPU by default: neither."""
    _chunked(monkeypatch, 4, 4, None)
    monkeypatch.setattr(triton_impl, "SEQ_CHUNK_AUTO", 8)
    inputs, cu = _inputs(1, 60, 6, 4, 2, seed=12), torch.tensor([0, 50, 60])
    for programs, lengths in ((5, [8, 8]), (3, [8]), (None, [])):
        monkeypatch.setattr(triton_impl, "SEQ_CHUNK_PROGRAMS", programs)
        chunk_lengths.clear()
        _compare(inputs, (), True, cu)
        assert chunk_lengths == lengths, programs


@pytest.mark.parametrize("output_final_state", [True, False])
def test_chunked_sequential_forward_only(output_final_state, monkeypatch, chunk_lengths):
    """Without a gradient (no saved states) and without the final state, as inference runs it."""
    _chunked(monkeypatch, 4, 8, 16)
    inputs = _inputs(2, 37, 6, 4, 2, seed=13)
    args = [inputs[k] for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias")]
    with torch.no_grad():
        got, want = (selective_scan(*args, initial_state=inputs["initial_state"],
                                    output_final_state=output_final_state, backend=b) for b in ("triton", "reference"))
    assert _rel(got[0], want[0]) < RTOL
    assert got[1] is None if not output_final_state else _rel(got[1], want[1]) < RTOL
    assert chunk_lengths == [16]


def test_chunked_sequential_bf16(monkeypatch, chunk_lengths):
    """bf16 inputs through the chunked path (forward tile 4, backward 8, chunks of 16), as
    :func:`test_triton_bf16_inputs`."""
    _chunked(monkeypatch, 4, 8, 16)
    _compare_bf16(_inputs(2, 37, 6, 8, 2, seed=14), (), True, None)
    assert chunk_lengths == [16, 16]


def test_chunk_length_must_be_a_multiple_of_the_saved_state_interval(monkeypatch):
    _chunked(monkeypatch, 4, 8, 12)
    inputs = _inputs(1, 20, 4, 4, 1)
    with pytest.raises(ValueError, match="SEQ_CHUNK"):
        selective_scan(*(inputs[k] for k in ("x", "dt", "A", "B", "C")), backend="triton")


def test_packed_sequences_match_the_reference_and_each_sequence_alone(small_tiles):
    cu = torch.tensor([0, 9, 11, 17])  # lengths 9, 2 (shorter than a tile), 6
    inputs = _inputs(1, 17, 6, 4, 3, seed=3)
    got = _compare(inputs, (), True, cu)
    # the reference on sequence 1 alone gives the same output rows and final state
    s, e = 9, 11
    alone = {k: (v[:, s:e] if v.dim() == 3 and k not in ("initial_state",) else v) for k, v in inputs.items()}
    alone["initial_state"] = inputs["initial_state"][1:2]
    y1 = _run("reference", alone, (), True, None)
    torch.testing.assert_close(got["y"][:, s:e], y1["y"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["final_state"][1:2], y1["final_state"], atol=1e-5, rtol=1e-5)


def test_padded_positions_leave_the_state_exactly_unchanged(small_tiles):
    inputs = _inputs(1, 5, 6, 4, 1, seed=4)
    inputs["dt"][:] = float("-inf")
    for backend in ("reference", "triton"):
        _, hT = selective_scan(*(inputs[k] for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias")),
                               initial_state=inputs["initial_state"], output_final_state=True, backend=backend)
        assert torch.equal(hT, inputs["initial_state"]), backend


def test_unknown_design_is_rejected(monkeypatch):
    monkeypatch.setattr(triton_impl, "DESIGN", "parallel")
    inputs = _inputs(1, 4, 4, 4, 1)
    with pytest.raises(ValueError, match="DESIGN"):
        selective_scan(*(inputs[k] for k in ("x", "dt", "A", "B", "C")), backend="triton")


@pytest.mark.parametrize("has_optional", [True, False])
def test_decode_step_matches_reference_and_the_scan(has_optional):
    inputs = _inputs(3, 4, 70, 16, 3, seed=5)  # 70 channels: two blocks of 64, the second ragged
    opt = ("D", "z", "dt_bias") if has_optional else ()
    states = {b: inputs["initial_state"].clone() for b in ("reference", "triton")}
    outs = {b: [] for b in states}
    for t in range(4):
        for backend, state in states.items():
            kwargs = {k: None for k in ("D", "z", "dt_bias")}
            kwargs.update({k: inputs[k][:, t] if k == "z" else inputs[k] for k in opt})
            outs[backend].append(
                selective_scan_step(inputs["x"][:, t], inputs["dt"][:, t], inputs["A"], inputs["B"][:, t],
                                    inputs["C"][:, t], state, backend=backend, **kwargs)
            )
    torch.testing.assert_close(torch.stack(outs["triton"], 1), torch.stack(outs["reference"], 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(states["triton"], states["reference"], atol=1e-5, rtol=1e-5)
    y, hT = reference.selective_scan(
        inputs["x"], inputs["dt"], inputs["A"], inputs["B"], inputs["C"],
        *(inputs[k] if k in opt else None for k in ("D", "z", "dt_bias")), True, inputs["initial_state"], True, None,
    )
    torch.testing.assert_close(torch.stack(outs["triton"], 1), y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(states["triton"], hT, atol=1e-5, rtol=1e-5)


def test_rejects_bad_shapes():
    inputs = _inputs(2, 4, 8, 4, 2)
    args = [inputs[k] for k in ("x", "dt", "A", "B", "C")]
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(*args[:2], torch.zeros(7, 4), *args[3:])
    with pytest.raises(ValueError, match="B must be"):
        selective_scan(*args[:3], torch.zeros(2, 4, 5), args[4])
    with pytest.raises(ValueError, match="initial_state"):
        selective_scan(*args, initial_state=torch.zeros(1, 8, 4))
    with pytest.raises(ValueError, match="state must be float32"):
        x, dt, A, B, C = args
        selective_scan_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], torch.zeros(2, 8, 4).double())


def test_mamba_model_on_triton_kernels_matches_reference(small_tiles, monkeypatch):
    """A tiny Mamba end to end (left-padded batch, prefill + decode with the cache, loss gradients) on the Triton
    scan, conv and step kernels equals the same model on the PyTorch reference."""
    from transformers import DynamicCache

    from hf_recurrent.modeling.mamba import HfrMambaConfig, HfrMambaForCausalLM

    monkeypatch.setattr("hf_recurrent.kernels.causal_conv1d.triton.BLOCK_T", 8)
    monkeypatch.setattr("hf_recurrent.kernels.causal_conv1d.triton.BLOCK_D", 8)
    torch.manual_seed(0)
    config = HfrMambaConfig(vocab_size=32, hidden_size=4, num_hidden_layers=1, state_size=4, initializer_range=0.3)
    model = HfrMambaForCausalLM(config)
    ids = torch.randint(3, 32, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    results = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("HF_RECURRENT_BACKEND", backend)
        model.zero_grad()
        model(ids, attention_mask=mask, labels=ids).loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        with torch.no_grad():
            cache = DynamicCache(config=config)
            logits = [model(ids[:, :6], attention_mask=mask[:, :6], cache=cache, use_cache=True).logits]
            for t in range(6, 9):
                step = model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache, use_cache=True)
                logits.append(step.logits)
        results[backend] = torch.cat(logits, 1), grads
    torch.testing.assert_close(results["triton"][0], results["reference"][0], atol=1e-5, rtol=1e-5)
    for name, grad in results["reference"][1].items():
        assert _rel(results["triton"][1][name], grad) < 1e-4, name
