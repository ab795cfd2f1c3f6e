"""When the decode-step kernels use programmatic dependent launch (the rule, checked without a GPU), and the helper
that sets kernel tuning knobs for a block."""

from types import SimpleNamespace

import torch

from hf_recurrent.kernels import triton_launch


def _as_hopper(monkeypatch, supported: bool = True, major: int = 9) -> torch.device:
    monkeypatch.setattr(triton_launch, "cuda_properties", lambda device: SimpleNamespace(
        major=major, multi_processor_count=132))
    monkeypatch.setattr(triton_launch, "triton_interpreting", lambda: False)
    monkeypatch.setattr(triton_launch, "_SUPPORTED", supported)
    return torch.device("cuda", 0)


def test_on_hopper_grids_up_to_two_programs_per_multiprocessor_launch_dependent(monkeypatch):
    device = _as_hopper(monkeypatch)
    assert triton_launch.pdl_options(device, 264) == {"PDL": True, "launch_pdl": True}
    assert triton_launch.pdl_options(device, 265) == {"PDL": False}  # more than one wave: as usual


def test_no_dependent_launch_without_support_before_hopper_on_the_cpu_or_with_the_knob_off(monkeypatch):
    assert triton_launch.pdl_options(_as_hopper(monkeypatch, supported=False)) == {"PDL": False}  # old Triton
    assert triton_launch.pdl_options(_as_hopper(monkeypatch, major=8)) == {"PDL": False}  # Ampere
    assert triton_launch.pdl_options(torch.device("cpu")) == {"PDL": False}
    device = _as_hopper(monkeypatch)
    monkeypatch.setattr(triton_launch, "DEPENDENT_LAUNCH", False)
    assert triton_launch.pdl_options(device) == {"PDL": False}


def test_tuning_knobs_are_set_for_a_block_and_restored_and_unknown_names_refused():
    import pytest

    from hf_recurrent.kernels.backend import knobs

    with pytest.raises(RuntimeError), knobs(triton_launch, DEPENDENT_LAUNCH_MAX_WAVES=7):
        assert triton_launch.DEPENDENT_LAUNCH_MAX_WAVES == 7
        raise RuntimeError  # restored on the way out of a failing block too
    assert triton_launch.DEPENDENT_LAUNCH_MAX_WAVES == 2
    with pytest.raises(AttributeError, match="NO_SUCH_KNOB"), knobs(triton_launch, NO_SUCH_KNOB=1):
        pass
    assert not hasattr(triton_launch, "NO_SUCH_KNOB")
