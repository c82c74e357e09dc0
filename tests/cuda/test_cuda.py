"""Device checks: the zoo, the fused kernels, surgery, training and probes on a CUDA device.

Skipped without CUDA (CI has none). ``ACTLAB_TEST_DEVICE=cpu`` runs the same checks on the CPU,
which is how their logic is exercised on machines without a GPU. ``scripts/gpu_check.sh`` runs
this module and the CUDA benchmarks in one go on a lent GPU machine.

Every result on the device is compared with the float64 formula on the CPU (plain autograd
through the reference path), as the CPU tests do.
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
from torch import nn

import actlab
from actlab.activations import kernel_mode

_DEV = os.environ.get("ACTLAB_TEST_DEVICE", "cuda")
DEVICE = torch.device(_DEV)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        DEVICE.type == "cuda" and not torch.cuda.is_available(),
        reason="no CUDA device (ACTLAB_TEST_DEVICE=cpu runs these checks on the CPU)",
    ),
]

FUSED = [n for n in actlab.list_activations() if actlab.get_activation_info(n).fused]
# above the 65,536-element threshold from which "auto" compiles (Triton on CUDA)
BIG = 70_001


def _cpu_reference(m: nn.Module, x: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    """[y, dx, dparams...] of the float64 formula on the CPU."""
    ref = _clone_to(m, torch.device("cpu"), torch.float64)
    xr = x.detach().to("cpu", torch.float64).requires_grad_(True)
    with kernel_mode("reference"):
        y = ref(xr)
        y.backward(g.to("cpu", torch.float64))
    return [y.detach(), xr.grad] + [p.grad for p in ref.parameters()]  # type: ignore[list-item]


def _clone_to(m: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    return copy.deepcopy(m).to(device, dtype)


def _run(m: nn.Module, x: torch.Tensor, g: torch.Tensor, mode: str) -> list[torch.Tensor]:
    m.zero_grad()
    xd = x.detach().clone().requires_grad_(True)
    with kernel_mode(mode):
        y = m(xd)
        y.backward(g)
    return [y.detach(), xd.grad] + [p.grad for p in m.parameters()]  # type: ignore[list-item]


def _assert_close(got: list[torch.Tensor], ref: list[torch.Tensor], tol: float, what: str) -> None:
    for i, (a, b) in enumerate(zip(got, ref)):
        a64 = a.detach().to("cpu", torch.float64)
        if a64.numel() > 1 or i < 2:
            torch.testing.assert_close(
                a64, b, rtol=tol, atol=tol, msg=lambda s, i=i: f"{what} [{i}]: {s}"
            )
        else:  # a parameter gradient: a sum over all elements, compared relative to its size
            scale = max(1.0, float(b.abs().sum()))
            assert abs(float(a64) - float(b)) <= 10 * tol * scale * math.sqrt(got[0].numel()), what


@pytest.mark.parametrize("name", actlab.list_activations())
def test_every_activation_matches_the_float64_formula_on_the_device(name: str) -> None:
    m = actlab.create_activation(name).to(DEVICE)
    x = torch.randn(4096, device=DEVICE) * 3
    g = torch.randn_like(x)
    ref = _cpu_reference(m, x, g)
    _assert_close(_run(m, x, g, "auto"), ref, 2e-5, f"{name} float32 on {DEVICE}")
    with torch.no_grad():  # bf16 forward: finite where the formula is, close at bf16 precision
        yb = actlab.create_activation(name).to(DEVICE, torch.bfloat16)(x.bfloat16())
    assert yb.dtype == torch.bfloat16 and yb.device.type == DEVICE.type
    torch.testing.assert_close(yb.double().cpu(), ref[0], rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("mode", ["eager", "compiled", "auto"])
def test_fused_kernels_on_the_device_match_and_save_only_the_input(name: str, mode: str) -> None:
    m = actlab.create_activation(name).to(DEVICE)
    x = torch.randn(BIG, device=DEVICE) * 3
    g = torch.randn_like(x)
    ref = _cpu_reference(m, x, g)
    _assert_close(_run(m, x, g, mode), ref, 2e-5, f"{name} {mode} on {DEVICE}")
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.numel() > 16:  # not the scalar / coefficient parameters
            saved.append(t.numel() * t.element_size())
        return t

    xg = x.clone().requires_grad_(True)
    with kernel_mode(mode), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = m(xg)  # what the forward keeps for backward (not the backward's own transients)
    y.sum().backward()
    assert sum(saved) <= x.numel() * x.element_size(), (name, mode, saved)


def test_crrelu_and_eafo_gelu_in_bfloat16_training_dtype() -> None:
    for spec in ("crrelu", "eafo(base='gelu')"):
        m = actlab.create_activation(spec).to(DEVICE, torch.bfloat16)
        x = (torch.randn(BIG, device=DEVICE) * 3).bfloat16().requires_grad_(True)
        y = m(x)
        y.float().sum().backward()
        assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert m.eps.grad is not None and torch.isfinite(m.eps.grad).all()


def test_searched_formula_lean_path_on_the_device() -> None:
    m = actlab.create_activation(
        "expr(formula='x * sigmoid(1.5 * x) + eps * x * exp(-0.5 * square(x))')"
    ).to(DEVICE)
    x = torch.randn(BIG, device=DEVICE)
    g = torch.randn_like(x)
    _assert_close(_run(m, x, g, "auto"), _cpu_reference(m, x, g), 2e-5, f"expr on {DEVICE}")


def test_swap_keeps_the_device_and_identity_swaps_change_nothing() -> None:
    model = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16), nn.SiLU()).to(DEVICE)
    x = torch.randn(8, 16, device=DEVICE)
    before = model(x)
    rep = actlab.swap_activations(model, {"gelu": "gelu", "silu": "silu"})
    assert len(rep.sites) == 2
    torch.testing.assert_close(model(x), before, rtol=1e-6, atol=1e-6)
    actlab.swap_activations(model, {"gelu": "crrelu"})
    assert all(p.device.type == DEVICE.type for p in model.parameters())  # ε too
    assert model(x).device.type == DEVICE.type


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_on_the_device(dtype: str) -> None:
    from actlab.train import run_training

    r = run_training("digits-mlp", "crrelu", seed=0, epochs=2, device=DEVICE, dtype=dtype)
    assert math.isfinite(r.value) and r.value > 0.5, r.history[-1]
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"] * 1.5


def test_vit_step_on_the_device() -> None:
    from actlab.train import run_training

    r = run_training("digits-mlp", "crrelu", seed=0, model="vit_micro", max_steps=5, device=DEVICE)
    assert math.isfinite(r.history[-1]["train_loss"])


def test_probes_on_the_device() -> None:
    import actlab.probes as P

    model = nn.Sequential(
        nn.Linear(16, 64), actlab.create_activation("crrelu"), nn.Linear(64, 4)
    ).to(DEVICE)
    with P.probe(model, probes=["sparsity", "distribution"]) as p:
        for _ in range(3):
            model(torch.randn(32, 16, device=DEVICE))
    rows = {r["probe"]: r for r in p.summary()}
    assert (
        0.0 <= rows["sparsity"]["near_zero_frac"] <= 1.0 and rows["sparsity"]["tokens_sampled"] > 0
    )
    assert math.isfinite(rows["distribution"]["std"]) and rows["distribution"]["std"] > 0


@pytest.mark.parametrize(
    "spec,slot,shape",
    [
        ("polynorm", {}, (8, 16)),
        ("evonorm_s0", {"num_features": 8}, (2, 8, 4, 4)),
        ("relu_kan", {"in_features": 16, "hidden_features": 16, "out_features": 16}, (8, 16)),
    ],
)  # fmt: skip
def test_layer_finiteness_checks_do_not_sync_every_forward(
    spec: str, slot: dict[str, int], shape: tuple[int, ...]
) -> None:
    """Off the CPU a layer checks its parameters (a KAN block its output) on its first call and
    every CHECK_EVERY-th after it (actlab.layers._finite): the calls between read nothing back
    from the device, which torch's sync debug mode turns into an error."""
    if DEVICE.type != "cuda":
        pytest.skip("host syncs are a CUDA notion")
    from actlab.layers import create_layer
    from actlab.layers._finite import CHECK_EVERY

    m = create_layer(spec, **slot).to(DEVICE)
    x = torch.randn(*shape, device=DEVICE)
    with torch.no_grad():
        m(x)  # the first call checks (and syncs)
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(CHECK_EVERY - 1):
                m(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
