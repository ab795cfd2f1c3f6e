"""RetNet: parity with flash-linear-attention's own RetNet on the CPU, the three forms, published configs.

fla's model runs in a subprocess under Triton's interpreter (:mod:`tests.models.fla_retnet_reference`); its
fla-hub-layout checkpoints go through ``convert("fla-retnet", ...)``. Logits must agree to fp32 round-off (1e-4;
observed ~5e-6, ~2e-5 with left padding, where fla unpads into packed sequences), greedy generations exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_recurrent.conversion import ConversionError, ConvertedCheckpoint, build_model, convert
from hf_recurrent.conversion.fla_gla import gla_state_dict_from_fla
from hf_recurrent.conversion.fla_retnet import retnet_config_from_fla
from hf_recurrent.kernels.linear_attention import gated_linear_attention
from hf_recurrent.modeling.retnet import HfrRetNetForCausalLM
from hf_recurrent.modeling.retnet.modeling_retnet import retention_log_decay, rotate

from .fla_retnet_reference import CASES, PROMPT_LEN

REPO_ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = Path(str(files("hf_recurrent.conversion") / "published"))
ATOL = 1e-4


@pytest.fixture(scope="module")
def fla_retnet_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fla-retnet")
    run = subprocess.run(
        [sys.executable, "-m", "tests.models.fla_retnet_reference", str(out)],
        cwd=REPO_ROOT, env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=600,
    )
    if run.returncode != 0:
        pytest.fail(f"fla RetNet reference run failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}")
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_logits_and_greedy_match_fla(case, fla_retnet_reference, tmp_path):
    ref = torch.load(fla_retnet_reference / case / "reference.pt")
    convert("fla-retnet", fla_retnet_reference / case / "checkpoint", tmp_path / "dst")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "dst").eval()
    assert type(model) is HfrRetNetForCausalLM
    keep = ref["mask"].bool()
    with torch.no_grad():
        torch.testing.assert_close(model(ref["input_ids"]).logits, ref["logits"], atol=ATOL, rtol=0)
        padded = model(ref["padded"], attention_mask=ref["mask"]).logits
        torch.testing.assert_close(padded[keep], ref["padded_logits"][keep], atol=ATOL, rtol=0)
        greedy = model.generate(ref["input_ids"][:, :PROMPT_LEN], max_new_tokens=ref["greedy"].shape[1] - PROMPT_LEN,
                                do_sample=False, eos_token_id=None, pad_token_id=0)
    assert greedy.tolist() == ref["greedy"].tolist()


def test_parallel_form_equals_chunked_and_recurrent():
    """Retention's parallel form ``(Q K^T * D) V`` with ``D[n, m] = gamma^(n-m)`` (n >= m) and rotated q, k."""
    B, T, H, K, V = 2, 37, 3, 8, 4
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(B, T, H, K, generator=g), torch.randn(B, T, H, K, generator=g)
    v = torch.randn(B, T, H, V, generator=g)
    pos = torch.arange(T).expand(B, T)
    q, k = rotate(q, pos, 10000.0), rotate(k, pos, 10000.0)
    log_gamma = retention_log_decay(H)
    n = torch.arange(T)
    decay = torch.where(n[:, None] >= n, (n[:, None] - n).clamp_min(0) * log_gamma[:, None, None], -torch.inf).exp()
    parallel = torch.einsum("bnhk,bmhk,hnm,bmhv->bnhv", q * K**-0.5, k, decay, v)
    chunked, _ = gated_linear_attention(q, k, v, log_gamma.expand(B, T, H))
    torch.testing.assert_close(chunked, parallel, atol=1e-5, rtol=1e-5)
    state = torch.zeros(B, H, K, V)
    steps = []
    for t in range(T):
        state = log_gamma.exp()[:, None, None] * state + k[:, t, :, :, None] * v[:, t, :, None, :]
        steps.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * K**-0.5, state))
    torch.testing.assert_close(torch.stack(steps, 1), parallel, atol=1e-5, rtol=1e-5)
    assert torch.allclose(log_gamma.exp(), 1 - 2.0 ** (-5 - torch.arange(H).float()))


@pytest.mark.parametrize("name,params", [("1.3B", 1_351_727_104), ("2.7B", None)])
def test_published_configs_map_on_the_meta_device(name, params):
    from fla.models import RetNetConfig, RetNetForCausalLM

    fla_config = json.loads((PUBLISHED / f"fla-hub_retnet-{name}-100B.json").read_text())
    with torch.device("meta"):
        fla_model = RetNetForCausalLM(RetNetConfig(**fla_config))
    config = retnet_config_from_fla(fla_config)
    model = build_model(ConvertedCheckpoint(config, gla_state_dict_from_fla(fla_model.state_dict(), config)))
    count = sum(p.numel() for p in model.parameters())
    assert model.device.type == "meta" and count == sum(p.numel() for p in fla_model.parameters())
    assert params is None or count == params  # the published 1.3B checkpoint's parameter count


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(model_type="gla"), "model_type 'retnet'"),
        (dict(attn={"layers": [1]}), "hybrid"),
        (dict(hidden_act="gelu"), "swish"),
        (dict(num_heads=3), "divisible by num_heads"),
    ],
)
def test_unrepresentable_configs_are_refused(change, message):
    fla_config = {**json.loads((PUBLISHED / "fla-hub_retnet-1.3B-100B.json").read_text()), **change}
    with pytest.raises(ConversionError, match=message):
        retnet_config_from_fla(fla_config)


def test_missing_weight_is_refused_naming_the_key(fla_retnet_reference, tmp_path):
    from safetensors.torch import load_file, save_file

    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text((fla_retnet_reference / "plain" / "checkpoint" / "config.json").read_text())
    state = load_file(fla_retnet_reference / "plain" / "checkpoint" / "model.safetensors")
    del state["model.layers.1.attn.g_proj.weight"]
    save_file(state, src / "model.safetensors")
    with pytest.raises(ConversionError, match=r"missing key 'model\.layers\.1\.mixer\.g_proj\.weight'"):
        convert("fla-retnet", src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
