"""Reference models: forward shapes with several activations, gradient flow, one act per site."""

from __future__ import annotations

import pytest
import torch

from actlab.activations import CRReLU
from actlab.models.factory import UnknownModelError, build_model, get_model_preset, list_models

ACTS = ["gelu", "relu", "crrelu(eps=0.02)", "polyrelu", CRReLU]

IMAGE_CASES = [
    ("vit_micro", dict(in_chans=1, img_size=8, num_classes=10)),
    ("vit_mini_28", dict(in_chans=1, img_size=28, num_classes=10)),
    ("resnet8", dict(in_chans=3, img_size=16, num_classes=7)),
    ("mlp_small", dict(in_chans=1, img_size=8, num_classes=10)),
]


@pytest.mark.parametrize("act", ACTS, ids=str)
@pytest.mark.parametrize(("name", "kw"), IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_image_models_forward_and_grad(name: str, kw: dict, act: object) -> None:
    model = build_model(name, act, **kw)  # type: ignore[arg-type]
    x = torch.randn(3, kw["in_chans"], kw["img_size"], kw["img_size"])
    out = model(x)
    assert out.shape == (3, kw["num_classes"])
    out.square().mean().backward()
    for n, p in model.named_parameters():
        if p.requires_grad and "cls_token" not in n:  # cls token only reaches the head via attn
            assert p.grad is not None, n


@pytest.mark.parametrize("act", ["gelu", "crrelu", "swish"])
def test_char_gpt_forward_and_grad(act: str) -> None:
    model = build_model("gpt_char_micro", act, vocab_size=11)
    idx = torch.randint(0, 11, (2, 9))
    logits = model(idx)
    assert logits.shape == (2, 9, 11)
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.lm_head.weight is model.wte.weight
    out = model.generate(idx[:, :3], 4)
    assert out.shape == (2, 7)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_causality() -> None:
    model = build_model("gpt_char_micro", "crrelu", vocab_size=5).eval()
    idx = torch.randint(0, 5, (1, 10))
    a = model(idx)
    idx2 = idx.clone()
    idx2[0, 6:] = (idx2[0, 6:] + 1) % 5
    b = model(idx2)
    assert torch.allclose(a[0, :6], b[0, :6], atol=1e-6) and not torch.allclose(a[0, 6:], b[0, 6:])


@pytest.mark.parametrize("name", ["vit_micro", "gpt_char_micro", "resnet8", "mlp"])
def test_one_activation_instance_per_site(name: str) -> None:
    kw = dict(vocab_size=7) if "gpt" in name else dict(in_chans=1, img_size=8)
    shared = CRReLU(eps=0.05)
    model = build_model(name, shared, **kw)  # an instance is copied per site
    acts = [m for m in model.modules() if isinstance(m, CRReLU)]
    assert len(acts) >= 1 and all(a is not shared for a in acts)
    assert len({id(a.eps) for a in acts}) == len(acts)
    assert all(float(a.eps.detach()) == pytest.approx(0.05) for a in acts)


def test_vit_tiny_preset_matches_authors_config() -> None:
    p = get_model_preset("vit_tiny_patch4_32")
    assert p.defaults == dict(
        patch_size=4, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, drop_path=0.1
    )
    m = build_model("vit_tiny_patch4_32", "crrelu", depth=2)  # overrides any config field
    assert sum(isinstance(x, CRReLU) for x in m.modules()) == 2
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_resnet20_parameter_count() -> None:
    m = build_model("resnet20", "relu")
    assert 0.26e6 < sum(p.numel() for p in m.parameters()) < 0.28e6  # He et al.: 0.27M


def test_errors_are_helpful() -> None:
    with pytest.raises(UnknownModelError, match="Did you mean: vit_mini_28"):
        build_model("vit_mini28")
    with pytest.raises(TypeError, match="valid options"):
        build_model("mlp", "relu", widths=3)
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        build_model("vit_mini_28", "gelu", img_size=32)
    with pytest.raises(TypeError, match="vocab_size"):
        build_model("gpt_char_mini")
    assert "vit_tiny_patch4_32" in list_models("image") and "gpt_char_mini" in list_models("text")
