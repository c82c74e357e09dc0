"""Device checks of the sparsity methods: calibration, application, tuning and decoding of a
tiny random Llama on a CUDA device, against the same steps on the CPU.

Skipped without CUDA or transformers (CI has no GPU). ``ACTLAB_TEST_DEVICE=cpu`` runs the
same checks with the CPU as "the device", which exercises their logic on machines without a
GPU. The native decode kernels are CPU-only: on CUDA every path must keep the torch code and
say why, never fail.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sparse"))
from sparse_helpers import VOCAB, tiny_llama  # noqa: E402

from actlab.sparse import (  # noqa: E402
    METHODS,
    LeanDecoder,
    SparseGatedMLP,
    SparseLinear,
    TuneConfig,
    apply_state,
    make_method,
    tune_gains,
    use_kernels,
)

DEVICE = torch.device(os.environ.get("ACTLAB_TEST_DEVICE", "cuda"))

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        DEVICE.type == "cuda" and not torch.cuda.is_available(),
        reason="no CUDA device (ACTLAB_TEST_DEVICE=cpu runs these checks on the CPU)",
    ),
]


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, VOCAB, (2, 24), generator=g) for _ in range(2)]


def _logits(model: nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    dev = next(model.parameters()).device
    with torch.no_grad():
        out = [model(input_ids=b.to(dev), use_cache=False).logits for b in batches]
    return torch.cat(out).double().cpu()


@pytest.fixture(scope="module")
def dense() -> nn.Module:
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 products on the device as on CPU
    torch.backends.cudnn.allow_tf32 = False
    return tiny_llama(2)


@pytest.mark.parametrize("name", METHODS.names())
def test_calibration_and_application_on_the_device_match_the_cpu(
    name: str, dense: nn.Module
) -> None:
    batches = _batches()
    method = make_method(name, sparsity=0.5)
    cpu_model = copy.deepcopy(dense)
    dev_model = copy.deepcopy(dense).to(DEVICE)
    cpu_state = method.calibrate(cpu_model, batches)
    dev_state = method.calibrate(dev_model, [b.to(DEVICE) for b in batches])
    assert set(dev_state.thresholds) == set(cpu_state.thresholds)
    for path, t in cpu_state.thresholds.items():
        d = dev_state.thresholds[path]
        t64 = torch.as_tensor(t, dtype=torch.float64)
        d64 = torch.as_tensor(d, dtype=torch.float64).cpu()
        torch.testing.assert_close(d64, t64, rtol=1e-3, atol=1e-5, msg=f"{name} {path}")
    # the device's state on the device's model, the CPU's on the CPU's: same logits
    apply_state(cpu_model, cpu_state)
    report = apply_state(dev_model, dev_state)
    assert all(p.device.type == DEVICE.type for p in dev_model.parameters())
    torch.testing.assert_close(_logits(dev_model, batches), _logits(cpu_model, batches),
                               rtol=1e-3, atol=1e-3)  # fmt: skip
    report.reset_counts()
    _logits(dev_model, batches)
    for path, r in report.realised().items():
        assert abs(r - report.targets[path]) <= 0.02, (name, path, r)


def test_tuning_on_the_device_matches_the_cpu(dense: nn.Module) -> None:
    batches = _batches()
    state = make_method("teal", sparsity=0.5).calibrate(dense, batches)
    cfg = TuneConfig(steps=3, batch=2, rows=True)
    cpu = tune_gains(dense, state, batches, cfg)
    dev = tune_gains(copy.deepcopy(dense).to(DEVICE), state, [b.to(DEVICE) for b in batches], cfg)
    assert set(dev.gains) == set(cpu.gains)
    for k, g in cpu.gains.items():
        torch.testing.assert_close(dev.gains[k].cpu(), g.cpu(), rtol=1e-3, atol=1e-4, msg=k)
    assert dev.tuning is not None and cpu.tuning is not None
    assert abs(dev.tuning["kl_last"] - cpu.tuning["kl_last"]) <= 1e-3 + 1e-2 * cpu.tuning["kl_last"]


def test_decoding_on_the_device_keeps_the_torch_path_and_matches_generate(
    dense: nn.Module,
) -> None:
    batches = _batches()
    model = copy.deepcopy(dense).to(DEVICE)
    state = make_method("teal", sparsity=0.4).calibrate(model, [b.to(DEVICE) for b in batches])
    apply_state(model, state)
    assert any(isinstance(m, (SparseLinear, SparseGatedMLP)) for m in model.modules())
    kernels = use_kernels(model)  # CPU-only kernels: refused with a reason on CUDA
    if DEVICE.type == "cuda":
        assert not kernels.modules and kernels.skipped, kernels
        assert all("CPU" in why for why in kernels.skipped.values()), kernels.skipped
    prompt = batches[0][:1, :8].to(DEVICE)
    with torch.no_grad():
        ref = model.generate(prompt, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    lean = LeanDecoder(model, max_len=32)
    if DEVICE.type == "cuda":
        assert lean.native is None and "cuda" in lean.native_reason
    got = lean.generate(prompt, 12)
    assert got.device.type == DEVICE.type
    assert torch.equal(got.cpu(), ref.cpu())
