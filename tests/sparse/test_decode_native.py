"""The native decode step (csrc/decode_step.cpp) against LeanDecoder's module path.

Dense and sparse (TEAL, CATS; float32 and bfloat16 packed weights), Llama (GQA) and Gemma 3
(q/k norms, sandwich norms, sliding windows), rotated TEAL models (a change of basis between
blocks), 1 and 2 threads. Logits within 1e-4 of the module path (float32 sums in another
order), greedy tokens identical, and the same tokens as ``model.generate``. Run under
``ACTLAB_NATIVE_ISA=AVX2`` and ``DEFAULT`` too (Makefile, test-portable).
"""

from __future__ import annotations

import copy

import pytest
import torch
from decode_helpers import DECODE_CASES, tiny_gemma3
from sparse_helpers import tiny_llama
from torch import nn

from actlab.sparse import (
    SparseError,
    generate_routing,
    kernels_available,
    make_method,
    use_kernels,
)
from actlab.sparse._decode import LeanDecoder
from actlab.sparse._generate import time_decode

pytestmark = pytest.mark.skipif(not kernels_available(), reason="sparse kernels not built here")

_MODELS: dict[str, nn.Module] = {}


def _model(arch: str) -> nn.Module:
    if arch not in _MODELS:
        _MODELS[arch] = tiny_llama(3, seed=3) if arch == "llama" else tiny_gemma3()
    return copy.deepcopy(_MODELS[arch])


def _sparse(arch: str, method: str, batches: list[torch.Tensor], **params: object) -> nn.Module:
    model = _model(arch)
    if method != "dense":
        m = make_method(method, sparsity=0.5, **params)
        m.apply(model, m.calibrate(model, batches)).set_mode("decode")
    return model


def _decode(model: nn.Module, ids: torch.Tensor, native: bool, steps: int = 8) -> torch.Tensor:
    """Logits [1 + steps, vocab]: the prefill's last position, then greedy steps."""
    dec = LeanDecoder(model, ids.shape[1] + steps + 1, native=native)
    assert (dec.native is not None) == native, dec.native_reason
    with torch.no_grad():
        out = [dec.forward(ids, 0)]
        for p in range(ids.shape[1], ids.shape[1] + steps):
            out.append(dec.forward(out[-1].argmax().view(1, 1), p))
    return torch.stack(out)


def _same(native: torch.Tensor, module: torch.Tensor) -> None:
    err = float((native - module).abs().max())
    assert err <= 1e-4 * (1.0 + float(module.abs().max())), f"max |diff| {err:.3g}"
    assert torch.equal(native.argmax(-1), module.argmax(-1))


@pytest.mark.parametrize("arch,method,dtype", DECODE_CASES)
def test_native_step_matches_module_path(arch, method, dtype, batches) -> None:  # noqa: ANN001
    model = _sparse(arch, method, batches)
    if method != "dense":
        use_kernels(model, dtype)
    prompt = batches[0][:1, :9]  # longer than Gemma's window of 4
    _same(_decode(model, prompt, True), _decode(model, prompt, False))
    with generate_routing(model, False):  # Hugging Face's own generate (use_kernels routes it)
        want = model.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert torch.equal(LeanDecoder(model, 17, native=True).generate(prompt, 8), want)


@pytest.mark.parametrize("group", [1, 2])
def test_rotated_teal_decodes_like_generate(group: int, batches) -> None:  # noqa: ANN001
    """rotation='pca': the model carries between-block rotations as forward pre-hooks, which
    LeanDecoder's module path and the native step apply themselves."""
    model = _sparse("llama", "teal", batches, rotation="pca", rotation_group=group)
    rotated = [i for i, layer in enumerate(model.model.layers) if hasattr(layer, "wina_rotation")]
    assert rotated == ([1, 2] if group == 1 else [2])
    prompt = batches[1][:1, :8]
    want = model.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert torch.equal(LeanDecoder(model, 16, native=False).generate(prompt, 8), want)
    use_kernels(model)
    _same(_decode(model, prompt, True), _decode(model, prompt, False))
    assert torch.equal(LeanDecoder(model, 16, native=True).generate(prompt, 8), want)


def test_two_threads_same_logits(batches) -> None:  # noqa: ANN001
    model = _sparse("llama", "teal", batches)
    use_kernels(model)
    prompt = batches[0][:1, :8]
    one = _decode(model, prompt, True)
    torch.set_num_threads(2)  # the conftest fixture restores the count
    two = _decode(model, prompt, True)
    _same(two, one)


def test_native_counts_like_the_module_path(batches) -> None:  # noqa: ANN001
    model = _sparse("llama", "teal", batches)
    use_kernels(model)
    other = copy.deepcopy(model)
    use_kernels(other)
    prompt = batches[0][:1, :8]
    for m, native in ((model, True), (other, False)):
        for s in m.modules():
            if hasattr(s, "reset_counts"):
                s.reset_counts()
        LeanDecoder(m, 16, native=native).generate(prompt, 6)
    got = {n: (s.seen, s.zeroed) for n, s in model.named_modules() if hasattr(s, "seen")}
    want = {n: (s.seen, s.zeroed) for n, s in other.named_modules() if hasattr(s, "seen")}
    assert got == want and any(z for _, z in got.values())


def test_falls_back_with_a_reason(batches) -> None:  # noqa: ANN001
    model = _sparse("llama", "teal", batches)  # no use_kernels: no packed weights
    dec = LeanDecoder(model, 16)
    assert dec.native is None and "use_kernels" in dec.native_reason
    with pytest.raises(SparseError, match="native decode step cannot run.*use_kernels"):
        LeanDecoder(model, 16, native=True)
    use_kernels(model)
    handle = model.model.layers[1].mlp.register_forward_hook(lambda *a: None)
    assert "hooks" in LeanDecoder(model, 16).native_reason
    handle.remove()
    assert LeanDecoder(model, 16).native is not None
    wina = _sparse("llama", "wina", batches)
    use_kernels(wina)
    assert "SparseTopKLinear" in LeanDecoder(wina, 16).native_reason
    assert LeanDecoder(model, 16, native=False).native is None


def test_time_decode_native_same_tokens(batches) -> None:  # noqa: ANN001
    model = _sparse("llama", "teal", batches)
    use_kernels(model)
    prompt = batches[0][:1, :8]
    a = time_decode(model, prompt, 4, rounds=1, native=True)
    b = time_decode(model, prompt, 4, rounds=1, native=False)
    assert torch.equal(a.tokens, b.tokens) and a.tokens_per_second > 0
