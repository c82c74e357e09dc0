"""Layer slots of the reference models: defaults unchanged, other layers plugged in, checks.

GOLDEN holds outputs and parameter names of the default models computed with the code
before the slots existed (float64, torch.manual_seed(0), fixed input): a default model must
reproduce them, so existing checkpoints load and results stay comparable.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import Tensor, nn

from actlab.layers import GluMlp, Softmax
from actlab.models import CharGPT, GPTConfig, ViT, ViTConfig
from actlab.models.factory import (
    MODELS,
    UnknownModelError,
    build_model,
    check_model_overrides,
    get_model_preset,
    model_override_keys,
)

# name/act -> (first outputs, sum, sha256[:16] of "key:shape" lines, number of keys)
GOLDEN = {
    "vit_micro/gelu": (
        [0.02707708332351355, 0.269429422480324, -0.12445174127411249, -0.1651915159199421],
        -0.006483952333288356, "c745bf06ffe7ced0", 32,
    ),
    "vit_micro/crrelu": (
        [-0.05921313824705361, 0.23220615273245998, -0.13940544475810665, -0.10987893285148889],
        -0.1249820539911776, "a5a216c62fce29e1", 34,
    ),
    "gpt_char_micro/gelu": (
        [0.5083586816471515, 0.17042153157532683, -0.03447106286895551, -0.10170136768113038],
        5.224795402897486, "b11521a80e7d4131", 29,
    ),
    "resnet8/relu": (
        [0.08894012526389554, -0.02853780511480418, 0.14616118402097306, 0.7045247466573028],
        1.6853958161699867, "d927c27f1232be65", 44,
    ),
    "mlp_small/relu": (
        [-0.36288496213104965, -0.18069493548922844, -0.028973400268833938, -1.1752525176490125],
        -2.479717559671232, "5570abf16b5d4bd1", 4,
    ),
}  # fmt: skip
KEYS = {
    "vit_mini_28": ("b1de8f71fe87b2ce", 56), "vit_tiny_patch4_32": ("1252853685623123", 152),
    "resnet20": ("1af56a7d60cd709a", 116), "mlp": ("2558c77ddb0fc109", 6),
    "gpt_char_mini": ("6340e64a902d914c", 53), "gpt_char_small": ("5e0f713e6a6be7d7", 77),
    "vit_small_28": ("c7801254e56b6f66", 80),
}  # fmt: skip
KW = {
    "vit_micro": (dict(in_chans=1, img_size=8, num_classes=5), (2, 1, 8, 8)),
    "gpt_char_micro": (dict(vocab_size=7), None),
    "resnet8": (dict(in_chans=3, img_size=8, num_classes=4), (2, 3, 8, 8)),
    "mlp_small": (dict(in_chans=1, img_size=4, num_classes=3), (2, 1, 4, 4)),
}


def _keys(m: nn.Module) -> tuple[str, int]:
    lines = [f"{k}:{tuple(v.shape)}" for k, v in m.state_dict().items()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16], len(lines)


def _input(name: str) -> Tensor:
    shape = KW[name][1]
    g = torch.Generator().manual_seed(1)
    if shape is None:
        return torch.randint(0, 7, (2, 5), generator=g)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _run(name: str, act: str, **slots: object) -> tuple[nn.Module, Tensor]:
    torch.manual_seed(0)
    m = build_model(name, act, **KW[name][0], **slots).double()  # type: ignore[arg-type]
    m.train(name.startswith("resnet"))
    with torch.no_grad():
        return m, m(_input(name))


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_default_models_reproduce_the_models_before_the_slots(case: str) -> None:
    name, act = case.split("/")
    values, total, sha, n = GOLDEN[case]
    m, y = _run(name, act)
    assert _keys(m) == (sha, n)
    # the weights are initialised in float32 before .double(), and PyTorch's float32 init kernels
    # differ in the last bits between CPU dispatches (AVX-512 / AVX2 / portable: up to 2e-6
    # relative in these outputs), so the golden values are compared at float32 precision; a
    # model built differently (other layers, order or init) differs at O(1)
    torch.testing.assert_close(y.flatten()[:4].tolist(), values, rtol=1e-5, atol=1e-6)
    assert float(y.sum()) == pytest.approx(total, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", sorted(KEYS))
def test_default_presets_keep_their_parameter_names(name: str) -> None:
    kw = (
        dict(vocab_size=11)
        if "gpt" in name
        else (dict(in_chans=1, img_size=28) if "28" in name else {})
    )
    assert _keys(build_model(name, "gelu", **kw)) == KEYS[name]


class _ManualSoftmax(Softmax):
    """Softmax through the explicit score path (not the fused kernel)."""


@pytest.mark.parametrize("name", ["vit_micro", "gpt_char_micro"])
def test_explicit_score_path_equals_the_fused_softmax(name: str) -> None:
    _, want = _run(name, "gelu")
    m, got = _run(name, "gelu", attn_score=_ManualSoftmax)
    assert any(isinstance(x, _ManualSoftmax) for x in m.modules())
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    _, same = _run(name, "gelu", attn_score="softmax")  # named softmax: the fused kernel
    torch.testing.assert_close(same, want, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["vit_micro", "gpt_char_micro"])
@pytest.mark.parametrize(
    "slots",
    [
        dict(norm_layer="rmsnorm"),
        dict(mlp_layer="glu"),
        dict(mlp_layer="glu(act='silu')", norm_layer="rmsnorm(eps=1e-5)"),
        dict(attn_score="relu_attn"),
        dict(attn_score="sigmoid_attn", mlp_layer="mlp"),
        dict(norm_layer=lambda num_features: nn.LayerNorm(num_features, eps=1e-3)),
    ],
    ids=str,
)
def test_transformers_take_other_layers(name: str, slots: dict) -> None:
    torch.manual_seed(0)
    m = build_model(name, "crrelu", **KW[name][0], **slots)
    x = _input(name)
    out = m(x.float() if x.is_floating_point() else x)
    out.square().mean().backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if "cls_token" not in n)
    if slots.get("norm_layer") == "rmsnorm":
        assert any(isinstance(x, nn.RMSNorm) for x in m.modules())
        assert not any(isinstance(x, nn.LayerNorm) for x in m.modules())
    if "mlp_layer" in slots and "glu" in str(slots["mlp_layer"]):
        assert sum(isinstance(x, GluMlp) for x in m.modules()) == 2


def test_gpt_stays_causal_with_other_score_functions() -> None:
    for score in ("relu_attn", "sigmoid_attn"):
        torch.manual_seed(0)
        m = CharGPT(
            GPTConfig(vocab_size=5, block_size=16, n_layer=2, n_head=2, n_embd=16), attn_score=score
        )
        idx = torch.randint(0, 5, (1, 10))
        idx2 = idx.clone()
        idx2[0, 6:] = (idx2[0, 6:] + 1) % 5
        a, b = m(idx), m(idx2)
        assert torch.allclose(a[0, :6], b[0, :6], atol=1e-6) and not torch.allclose(
            a[0, 6:], b[0, 6:]
        )


def test_resnet_and_mlp_slots() -> None:
    m = build_model("resnet8", "relu", norm_layer="identity", in_chans=3)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    mlp = build_model("mlp_small", "relu", norm_layer="layernorm", in_chans=1, img_size=4)
    assert [type(x).__name__ for x in mlp.body][:2] == ["Linear", "LayerNorm"]
    assert mlp(torch.randn(2, 1, 4, 4)).shape == (2, 10)
    with pytest.raises(ValueError, match="does not fit this slot"):
        build_model("resnet8", "relu", norm_layer="layernorm")  # normalises the wrong axis
    with pytest.raises(ValueError, match="does not fit this slot"):
        ViT(ViTConfig(img_size=8, embed_dim=8, depth=1, num_heads=2), norm_layer="glu")
    with pytest.raises(ValueError, match="unknown layer 'rmsnrom'. Did you mean: rmsnorm"):
        build_model("vit_micro", "gelu", norm_layer="rmsnrom")
    with pytest.raises(TypeError, match="valid options: .*norm_layer"):
        build_model("mlp", "relu", mlp_layer="glu")  # the MLP classifier has no MLP-block slot


def test_model_presets_are_a_registry() -> None:
    assert MODELS.names() == sorted(MODELS.names()) and "vit_micro" in MODELS
    assert get_model_preset("vit-micro").name == "vit_micro"
    with pytest.raises(UnknownModelError, match="Did you mean: vit_mini_28") as e:
        get_model_preset("vit_mini28")
    assert "\n" not in str(e.value) and isinstance(e.value, KeyError)
    assert get_model_preset("vit_micro").slots == ("norm_layer", "mlp_layer", "attn_score")


def test_check_model_overrides_canonical_and_loud() -> None:
    a = check_model_overrides(
        "vit_micro", {"norm_layer": "RMSNorm(eps=1e-6)", "mlp_ratio": 2, "depth": 3}
    )
    b = check_model_overrides(
        "vit_micro", {"depth": 3.0, "norm_layer": "rms_norm", "mlp_ratio": 2.0}
    )
    assert a == b == {"depth": 3, "mlp_ratio": 2.0, "norm_layer": "rmsnorm"}
    assert list(a) == sorted(a)
    assert check_model_overrides("gpt_char_micro", {"mlp_layer": "glu(act='SiLU')"}) == {
        "mlp_layer": "glu(act='silu')"
    }
    keys = model_override_keys("vit_micro")
    assert "norm_layer" in keys and "depth" in keys and "num_classes" not in keys
    bad = [
        ({"nrom_layer": "rmsnorm"}, "valid keys: "),
        ({"act_layer": "relu"}, "list it as an ACT"),
        ({"norm_layer": "glu"}, "does not fit"),
        ({"norm_layer": "rmsnorm(eps=-1)"}, "eps must be > 0"),
        ({"norm_layer": "rmsnorm(eps=nan)"}, "literal"),
        ({"norm_layer": "__import__('os')"}, "layer spec"),
        ({"mlp_layer": "glu(act='nosuch')"}, "unknown activation"),
        ({"attn_score": "layernorm"}, "does not fit"),
        ({"norm_layer": 3}, "layer spec string"),
        ({"depth": "deep"}, "must be a number"),
        ({"depth": 2.5}, "whole number"),
        ({"mlp_ratio": float("inf")}, "finite"),
        ({"qkv_bias": 1}, "True or False"),
        ({"num_classes": 3}, "valid keys"),
    ]
    for overrides, words in bad:
        with pytest.raises(ValueError, match=words) as e:
            check_model_overrides("vit_micro", overrides)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="does not fit"):
        check_model_overrides("resnet8", {"norm_layer": "rmsnorm"})
    assert check_model_overrides("mlp", {"hidden": (32, 16)}) == {"hidden": [32, 16]}
