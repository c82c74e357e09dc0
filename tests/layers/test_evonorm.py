"""EvoNorm-B0/S0 against float64 twins, running variance, groups, the ResNet slot, the surgery."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actlab.layers import LayerSpecError, create_layer
from actlab.layers.evonorm import EvoNorm2dB0, EvoNorm2dS0, evonorm_s0_reference
from actlab.models.resnet import ResNetCifar, ResNetConfig
from actlab.surgery import SurgeryError, SurgeryInputError, identify_activation, replace_bn_act


def _params(m: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def _b0_twin(x: Tensor, v: Tensor, g: Tensor, b: Tensor, var: Tensor | None) -> Tensor:
    """Per channel: batch variance over (B, H, W) (or ``var``), instance std over (H, W)."""
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        xc = x[:, c]  # (B, H, W)
        bv = float(xc.flatten().var(unbiased=False)) if var is None else float(var[c])
        for n in range(x.shape[0]):
            s = math.sqrt(float(xc[n].flatten().var(unbiased=False)) + 1e-5)
            den = torch.maximum(torch.full_like(xc[n], math.sqrt(bv + 1e-5)), v[c] * xc[n] + s)
            out[n, c] = xc[n] / den * g[c] + b[c]
    return out


def test_b0_train_and_eval_match_the_twin_and_running_variance_updates() -> None:
    gen = torch.Generator().manual_seed(0)
    m = _params(EvoNorm2dB0(3)).double()
    x = torch.randn(4, 3, 5, 5, generator=gen, dtype=torch.float64) * 2 + 1
    y = m.train()(x)
    torch.testing.assert_close(y, _b0_twin(x, m.v, m.weight, m.bias, None), rtol=1e-10, atol=1e-12)
    batch_var = x.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=False)
    torch.testing.assert_close(
        m.running_var, 0.9 * torch.ones(3, dtype=torch.float64) + 0.1 * batch_var
    )
    y_eval = m.eval()(x)
    torch.testing.assert_close(
        y_eval, _b0_twin(x, m.v, m.weight, m.bias, m.running_var), rtol=1e-10, atol=1e-12
    )
    m2 = EvoNorm2dB0(3, momentum=0.5).double().train()
    m2(x)
    torch.testing.assert_close(m2.running_var, 0.5 + 0.5 * batch_var)


def test_s0_matches_the_twin_and_is_batch_independent() -> None:
    gen = torch.Generator().manual_seed(1)
    m = _params(EvoNorm2dS0(8, groups=4)).double()
    x = torch.randn(3, 8, 4, 4, generator=gen, dtype=torch.float64)
    want = evonorm_s0_reference(x, m.v, m.weight, m.bias, 4)
    torch.testing.assert_close(m(x), want, rtol=1e-10, atol=1e-12)
    # closed form with one channel per group: the instance std over (H, W)
    one = _params(EvoNorm2dS0(8, groups=8)).double()
    std = torch.sqrt(x.var(dim=(2, 3), unbiased=False, keepdim=True) + 1e-5)
    c = (1, -1, 1, 1)
    closed = x * torch.sigmoid(one.v.view(c) * x) / std * one.weight.view(c) + one.bias.view(c)
    torch.testing.assert_close(one(x), closed, rtol=1e-10, atol=1e-12)
    # sample 0's output does not depend on the rest of the batch (train or eval)
    x2 = x.clone()
    x2[1:] = 100 * torch.randn(2, 8, 4, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(m(x2)[0], m(x)[0])


def test_groups_are_capped_by_channels_and_must_divide() -> None:
    assert EvoNorm2dS0(16).groups == 16  # default 32 > 16 channels
    assert EvoNorm2dS0(64).groups == 32
    with pytest.raises(ValueError, match="do not split into 8 groups"):
        EvoNorm2dS0(12, groups=8)
    with pytest.raises(LayerSpecError, match="groups"):
        create_layer("evonorm_s0(groups=5)", num_features=12)


@pytest.mark.parametrize("cls", [EvoNorm2dB0, EvoNorm2dS0])
@pytest.mark.parametrize("act", [True, False])
def test_gradcheck_float64(cls: type, act: bool) -> None:
    m = _params(cls(4, apply_act=act)).double().train()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]

    def fn(inp: Tensor, *ps: Tensor) -> Tensor:
        return torch.func.functional_call(m, dict(zip(names, ps, strict=True)), (inp,))

    ps = [p.detach().clone().requires_grad_(True) for p in m.parameters()]
    assert torch.autograd.gradcheck(fn, (x, *ps))


@pytest.mark.parametrize("cls", [EvoNorm2dB0, EvoNorm2dS0])
def test_without_act_is_the_affine_part(cls: type) -> None:
    m = _params(cls(4)).without_act()
    assert m.v is None and "v" not in m.state_dict()
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(m(x), x * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_keep_their_dtype(dtype: torch.dtype) -> None:
    for m in (EvoNorm2dB0(4).eval(), EvoNorm2dS0(4)):
        x = torch.randn(2, 4, 3, 3)
        y = m(x.to(dtype))
        assert y.dtype == dtype
        torch.testing.assert_close(y.float(), m(x.to(dtype).float()), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("cls", [EvoNorm2dB0, EvoNorm2dS0])
def test_bad_input_gets_one_line(cls: type) -> None:
    m = cls(4)
    cases = [
        (torch.randn(2, 4, 3), "expects (B, C, H, W)"),
        (torch.randn(2, 5, 3, 3), "built for 4 channels"),
    ]
    for x, words in cases:
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
            m(x)
        assert "\n" not in str(e.value)
    with torch.no_grad():
        m.weight[0] = math.inf
    with pytest.raises(ValueError, match="non-finite parameters"):
        m(torch.randn(2, 4, 3, 3))
    with pytest.raises(LayerSpecError, match="eps"):
        create_layer(f"{m.name}(eps=0.0)", num_features=4)


def test_resnet_slot_replaces_bn_act_pairs() -> None:
    cfg = ResNetConfig(depth=8, in_chans=1, width=8)
    for kind, cls in (("evonorm_b0", EvoNorm2dB0), ("evonorm_s0(groups=4)", EvoNorm2dS0)):
        m = ResNetCifar(cfg, norm_layer=kind)
        assert isinstance(m.bn, cls) and isinstance(m.act, nn.Identity)
        for blk in m.blocks:
            assert isinstance(blk.bn1, cls) and isinstance(blk.act1, nn.Identity)
            assert isinstance(blk.bn2, cls) and blk.bn2.v is None  # before the residual add
            assert identify_activation(blk.act2) == "relu"
        y = m(torch.randn(2, 1, 12, 12))
        y.sum().backward()
        assert y.shape == (2, 10)


def _convnet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),  # not followed by a ReLU
        nn.AdaptiveAvgPool2d(1),
    )


def test_surgery_on_a_sequential_conv_net() -> None:
    torch.manual_seed(0)
    net = _convnet()
    net[1].train()
    report = replace_bn_act(net, "evonorm_s0(groups=4)")  # default example: (2, 3, 32, 32)
    assert report.paths == ["1", "2", "4", "5"]
    assert isinstance(net[1], EvoNorm2dS0) and isinstance(net[2], nn.Identity)
    assert isinstance(net[7], nn.BatchNorm2d)
    assert any("kept" in n and "7" in n for n in report.notes)
    assert net[7].training  # training flags restored after the dry run
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 8, 1, 1)


def test_surgery_on_our_resnet_keeps_the_bn_before_the_residual_add() -> None:
    m = ResNetCifar(ResNetConfig(depth=8, in_chans=1, width=8))
    report = replace_bn_act(m, "evonorm_b0", example_inputs=torch.randn(2, 1, 12, 12))
    assert report.paths == ["bn", "act"] + [
        p for i in range(3) for p in (f"blocks.{i}.bn1", f"blocks.{i}.act1")
    ]
    for blk in m.blocks:
        assert isinstance(blk.bn2, nn.BatchNorm2d) and identify_activation(blk.act2) == "relu"
    # the pair computes what a hand-assembled EvoNorm does at the stem
    x = torch.randn(2, 1, 12, 12)
    m.eval()
    stem = m.bn(m.conv(x))
    torch.testing.assert_close(m.act(stem), stem)


class _SharedRelu(nn.Module):
    """torchvision's BasicBlock pattern: one ReLU module used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.relu(self.bn(self.conv(x))) + x)


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def test_surgery_refuses_what_it_cannot_do_and_leaves_the_model_alone() -> None:
    shared = _SharedRelu()
    before = [id(m) for m in shared.modules()]
    with pytest.raises(SurgeryError, match="own ReLU module"):
        replace_bn_act(shared)
    assert [id(m) for m in shared.modules()] == before
    with pytest.raises(SurgeryError, match="no BatchNorm2d"):
        replace_bn_act(_Functional())
    odd = nn.Sequential(
        nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 5, 1), nn.BatchNorm2d(5),
        nn.ReLU(),
    )  # fmt: skip
    before = [id(m) for m in odd.modules()]
    with pytest.raises(LayerSpecError, match="groups"):  # the 5-channel build fails
        replace_bn_act(odd, "evonorm_s0(groups=2)")
    assert [id(m) for m in odd.modules()] == before  # all or nothing
    net = _convnet()
    with pytest.raises(SurgeryInputError, match="normalisation-activation"):
        replace_bn_act(net, "layernorm")
    with pytest.raises(SurgeryInputError, match="did not run"):
        replace_bn_act(net, example_inputs=torch.randn(2, 5, 8, 8))


@pytest.mark.parametrize("which", ["b0", "s0"])
def test_gradients_match_the_plain_twin(which: str) -> None:
    from actlab.layers.evonorm import evonorm_b0_reference

    gen = torch.Generator().manual_seed(5)
    m = _params(EvoNorm2dB0(4) if which == "b0" else EvoNorm2dS0(4, groups=2)).double().train()
    x = torch.randn(3, 4, 3, 3, generator=gen, dtype=torch.float64)
    up = torch.randn(3, 4, 3, 3, generator=gen, dtype=torch.float64)
    xa = x.clone().requires_grad_(True)
    (m(xa) * up).sum().backward()
    got = [xa.grad] + [p.grad.clone() for p in (m.v, m.weight, m.bias)]
    xb = x.clone().requires_grad_(True)
    ps = [p.detach().clone().requires_grad_(True) for p in (m.v, m.weight, m.bias)]
    if which == "b0":
        ref = evonorm_b0_reference(xb, *ps, None)
    else:
        ref = evonorm_s0_reference(xb, *ps, 2)
    (ref * up).sum().backward()
    for a, b in zip(got, [xb.grad] + [p.grad for p in ps], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("train", [True, False])
def test_b0_lean_function_matches_plain_autograd(train: bool) -> None:
    gen = torch.Generator().manual_seed(6)
    fast, plain = _params(EvoNorm2dB0(4)).double(), EvoNorm2dB0(4, fused=False).double()
    with torch.no_grad():
        fast.running_var.uniform_(0.5, 2.0, generator=gen)
    plain.load_state_dict(fast.state_dict())
    fast.train(train), plain.train(train)
    x = 1.5 * torch.randn(3, 4, 5, 5, generator=gen, dtype=torch.float64) + 0.3
    up = torch.randn(3, 4, 5, 5, generator=gen, dtype=torch.float64)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    ys = [m(t) for m, t in zip((fast, plain), xs, strict=True)]
    for y in ys:
        (y * up).sum().backward()
    torch.testing.assert_close(ys[0], ys[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-10, atol=1e-12)
    for p, q in zip(fast.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast.running_var, plain.running_var)
