"""fourier_karat: the float64 loop reference, masks, sizes, one-line errors, the ViT slot."""

from __future__ import annotations

import pytest
import torch

from actlab.layers import create_layer
from actlab.layers._kan_ref import fourier_karat_ref
from actlab.layers.fourier_karat import FourierKArAt
from actlab.models import build_model


def _layer(**kw: object) -> FourierKArAt:
    torch.manual_seed(0)
    m = FourierKArAt(**kw)  # type: ignore[arg-type]
    return m.double()


def _scores(b: int = 2, h: int = 2, nq: int = 4, nk: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, nq, nk, generator=g, dtype=torch.float64) * 2).requires_grad_(True)


MASKS = {
    "none": None,
    "causal": torch.ones(4, 4, dtype=torch.bool).tril(),
    "padding": torch.tensor([True, True, False, True]).expand(4, 4),
    "empty_row": torch.tensor([[False] * 4, [True] * 4, [True, False] * 2, [False, True] * 2]),
}


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("mask", list(MASKS))
def test_values_and_gradients_match_the_reference(heads: int, mask: str) -> None:
    m = _layer(terms=2, rank=3, max_keys=6, heads=heads, omega=0.7)
    s = _scores()
    mk = MASKS[mask]
    y = m(s, mk)
    want = fourier_karat_ref(m, s, mk)
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-12)
    if mk is not None:
        assert (y[..., ~mk] == 0).all()  # masked keys: exactly zero weight
    w = torch.randn_like(y)
    params = [s, *m.parameters()]
    got = torch.autograd.grad((y * w).sum(), params)
    exp = torch.autograd.grad((want * w).sum(), params)
    for a, b in zip(got, exp, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_gradcheck_tiny_with_parameters() -> None:
    m = _layer(terms=2, rank=2, max_keys=3)
    s = _scores(1, 1, 2, 3)
    names = [n for n, _ in m.named_parameters()]

    def fn(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(m, dict(zip(names, ps, strict=True)), (x,))

    ps = [p.detach().clone().requires_grad_(True) for p in m.parameters()]
    assert torch.autograd.gradcheck(fn, (s, *ps))


def test_fewer_keys_use_the_first_coefficients_and_masked_keys_do_not_matter() -> None:
    m = _layer(max_keys=8)
    s = _scores(nk=4).detach()
    torch.testing.assert_close(m(s), fourier_karat_ref(m, s, None))
    mask = torch.tensor([True, True, False, True]).expand(4, 4)
    changed = s.clone()
    changed[..., 2] += 10.0  # a hidden key's score does not reach any output
    torch.testing.assert_close(m(changed, mask), m(s, mask), rtol=0, atol=0)


def test_bad_input_is_one_line() -> None:
    m = _layer(max_keys=4, heads=2)
    for args, words in [
        ((torch.zeros(2, 4, 4, dtype=torch.float64),), r"shape \(B, heads, Nq, Nk\)"),
        ((torch.zeros(1, 2, 5, 5, dtype=torch.float64),), "at most 4 keys"),
        ((torch.zeros(1, 3, 4, 4, dtype=torch.float64),), "has 2 head operators"),
        ((torch.zeros(1, 2, 4, 4, dtype=torch.int64),), "floating-point"),
        ((torch.zeros(1, 2, 4, 4, dtype=torch.float64), torch.ones(4, 4)), "mask must be bool"),
    ]:
        with pytest.raises(ValueError, match=words) as info:
            m(*args)
        assert "\n" not in str(info.value)
    with torch.no_grad():
        m.up[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="fourier_karat: non-finite parameters"):
        m(torch.zeros(1, 2, 4, 4, dtype=torch.float64))
    for spec, words in [
        ("fourier_karat(terms=0)", "terms must be a whole number >= 1"),
        ("fourier_karat(rank=0)", "rank must be"),
        ("fourier_karat(omega=-1.0)", "omega must be > 0"),
    ]:
        with pytest.raises(ValueError, match=words):
            create_layer(spec)


def test_parameter_memory_is_as_documented() -> None:
    m = FourierKArAt(terms=3, rank=8, max_keys=64)
    assert sum(p.numel() for p in m.parameters()) == (2 * 3 + 1) * 64 * 8 == 3584


def test_replaces_softmax_in_the_vit_and_trains() -> None:
    torch.manual_seed(0)
    vit = build_model("vit_micro", "gelu", num_classes=3, in_chans=1, img_size=8,
                      attn_score="fourier_karat(heads=2, max_keys=17)")  # fmt: skip
    scores = [mod for mod in vit.modules() if isinstance(mod, FourierKArAt)]
    assert len(scores) == 2  # one per block
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    opt = torch.optim.AdamW(vit.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(vit(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in scores[0].parameters())
    assert losses[-1] < losses[0]
