"""``model.generate`` through the native decode step (actlab.sparse.native_generate).

The routed ``generate`` must return exactly what Hugging Face's ``generate`` returns on the
same sparsified model (same masks): dense / TEAL / CATS, float32 and bf16 packing, tiny Llama
and tiny Gemma 3 (sliding windows), eos stopping (int and list), min_new_tokens, max_length,
the default length, an all-ones attention_mask; and the same as with the kernels dropped.
Every call it does not serve goes to the original ``generate`` with a reason. Exercises the
kernels: run under ``ACTLAB_NATIVE_ISA=AVX2`` and ``DEFAULT`` too (Makefile, test-portable).
"""

from __future__ import annotations

import copy

import pytest
import torch
from decode_helpers import DECODE_CASES, tiny_gemma3
from sparse_eval_helpers import char_tokenizer, teal_char_llama
from sparse_helpers import tiny_llama
from torch import nn

from actlab.sparse import (
    SparseError,
    drop_kernels,
    generate_routing,
    kernels_available,
    load_sparse,
    make_method,
    native_generate,
    save_sparse,
    time_decode,
    use_kernels,
)

pytestmark = pytest.mark.skipif(not kernels_available(), reason="sparse kernels not built here")

_MODELS: dict[str, nn.Module] = {}
NEW = 10


def _model(arch: str, method: str, batches: list[torch.Tensor]) -> nn.Module:
    if arch not in _MODELS:
        _MODELS[arch] = tiny_llama(3, seed=3) if arch == "llama" else tiny_gemma3()
    model = copy.deepcopy(_MODELS[arch])
    if method != "dense":
        m = make_method(method, sparsity=0.5)
        m.apply(model, m.calibrate(model, batches)).set_mode("decode")
    return model


def _fast(model: nn.Module, method: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    if method == "dense":
        native_generate(model)
    else:
        use_kernels(model, dtype)
    return model


def _plain(model: nn.Module, *args: object, **kwargs: object) -> torch.Tensor:
    """Hugging Face's own generate on the same model (routing off)."""
    with generate_routing(model, False):
        out: torch.Tensor = model.generate(*args, **kwargs)  # type: ignore[operator]
    return out


def _routed(model: nn.Module, *args: object, **kwargs: object) -> torch.Tensor:
    out: torch.Tensor = model.generate(*args, **kwargs)  # type: ignore[operator]
    assert model.actlab_generate_reason == "", model.actlab_generate_reason
    return out


@pytest.mark.parametrize("arch,method,dtype", DECODE_CASES)
def test_routed_generate_equals_hf_generate(arch, method, dtype, batches) -> None:  # noqa: ANN001
    model = _model(arch, method, batches)
    prompt = batches[0][:1, :9]  # longer than Gemma's window of 4
    torch_path = model.generate(prompt, max_new_tokens=NEW, do_sample=False)  # no kernels yet
    _fast(model, method, dtype)
    got = _routed(model, prompt, max_new_tokens=NEW, do_sample=False)
    assert got.dtype == torch.long and got.shape == (1, 9 + NEW)
    assert torch.equal(got, _plain(model, prompt, max_new_tokens=NEW, do_sample=False))
    if method != "dense":
        assert torch.equal(got, torch_path)
        drop_kernels(model)  # back to the torch path and HF's generate
        assert "generate" not in model.__dict__
        assert torch.equal(model.generate(prompt, max_new_tokens=NEW, do_sample=False), got)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_eos_min_and_max_length_like_hf(arch, batches) -> None:  # noqa: ANN001
    model = _fast(_model(arch, "teal", batches), "teal")
    prompt = batches[1][:1, :7]
    full = _routed(model, prompt, max_new_tokens=NEW)[0, 7:].tolist()
    eos = full[3]  # a token greedy decoding emits: the call stops at its first occurrence
    cut = full.index(eos) + 1
    for kwargs in (
        {"eos_token_id": eos},
        {"eos_token_id": [5, eos], "pad_token_id": 0},
        {"eos_token_id": eos, "min_new_tokens": cut + 1},  # eos suppressed for a while
        {"eos_token_id": eos, "min_length": 7 + cut + 2},
        {"max_length": 7 + 5},
        {"max_length": 7 + 5, "max_new_tokens": 3},  # max_new_tokens takes precedence
        {},  # the model's default length (20 new tokens)
    ):
        kw = {"max_new_tokens": NEW, **kwargs} if "max_length" not in kwargs else kwargs
        got = _routed(model, prompt, **kw)
        assert torch.equal(got, _plain(model, prompt, **kw)), kwargs
    assert _routed(model, prompt, max_new_tokens=NEW, eos_token_id=eos).shape == (1, 7 + cut)
    assert _routed(model, prompt).shape == (1, 7 + 20)
    mask = torch.ones_like(prompt)
    got = _routed(model, input_ids=prompt, attention_mask=mask, max_new_tokens=4)
    assert torch.equal(got, _plain(model, prompt, max_new_tokens=4))


def _ids(batches: list[torch.Tensor]) -> torch.Tensor:
    return batches[0][:1, :8]


FALLBACKS = [
    ({"do_sample": True}, "sample is not greedy"),
    ({"num_beams": 2}, "beam_search is not greedy"),
    ({"repetition_penalty": 1.3}, "repetition_penalty=1.3"),
    ({"no_repeat_ngram_size": 2}, "no_repeat_ngram_size=2"),
    ({"use_cache": False}, "use_cache=False"),
    ({"output_scores": True, "return_dict_in_generate": True}, "output_scores=True"),
    ({"return_dict_in_generate": True}, "return_dict_in_generate=True"),
    ({"attention_mask": "zeros"}, "attention_mask is not all ones"),
    ({"input_ids": "pad"}, "holds pad_token_id 0"),
    ({"input_ids": "batch2"}, "batch 1"),
    ({"logits_processor": "empty"}, "logits_processor is given"),
]


@pytest.mark.parametrize("kwargs,why", FALLBACKS)
def test_unserved_calls_go_to_hf_generate(kwargs, why, batches) -> None:  # noqa: ANN001
    from transformers import LogitsProcessorList

    model = _fast(_model("llama", "teal", batches), "teal")
    ids = _ids(batches)
    kw = dict(kwargs)
    if kw.get("attention_mask") == "zeros":
        kw["attention_mask"] = torch.ones_like(ids)
        kw["attention_mask"][0, 0] = 0
    if kw.get("input_ids") == "pad":
        ids = ids.clone()
        ids[0, 2] = 0  # the pad id, no attention_mask: HF masks it
    if kw.get("input_ids") == "batch2":
        ids = batches[0][:2, :8]
    kw.pop("input_ids", None)
    if kw.get("logits_processor") == "empty":
        kw["logits_processor"] = LogitsProcessorList()
    torch.manual_seed(0)
    got = model.generate(ids, max_new_tokens=4, **kw)
    assert why in model.actlab_generate_reason
    torch.manual_seed(0)
    want = _plain(model, ids, max_new_tokens=4, **kw)
    if kw.get("return_dict_in_generate"):
        assert type(got) is type(want) and torch.equal(got.sequences, want.sequences)
    else:
        assert torch.equal(got, want)


def test_configured_settings_and_unsupported_models_fall_back(batches) -> None:  # noqa: ANN001
    model = _fast(_model("llama", "teal", batches), "teal")
    ids = _ids(batches)
    model.generation_config.repetition_penalty = 1.2  # configured, not passed
    got = model.generate(ids, max_new_tokens=4)
    assert "repetition_penalty=1.2" in model.actlab_generate_reason
    assert torch.equal(got, _plain(model, ids, max_new_tokens=4))
    model.generation_config.repetition_penalty = 1.0
    model.generation_config.temperature = 0.7  # read by sampling only: still greedy
    _routed(model, ids, max_new_tokens=4)
    handle = model.model.layers[1].mlp.register_forward_hook(lambda *a: None)
    got = model.generate(ids, max_new_tokens=4)
    assert "forward hooks" in model.actlab_generate_reason
    handle.remove()
    assert torch.equal(got, _routed(model, ids, max_new_tokens=4))
    base = type(model)
    own = {"generate": lambda self, *a, **k: base.generate(self, *a, **k)}
    model.__class__ = type("OwnGenerate", (base,), own)  # a model class with its own generate
    got = model.generate(ids, max_new_tokens=3)
    assert "OwnGenerate overrides generate" in model.actlab_generate_reason
    model.__class__ = base
    model.train()
    model.generate(ids, max_new_tokens=2)
    assert "training mode" in model.actlab_generate_reason
    model.eval().to(torch.bfloat16)  # stands for CUDA too: the step runs float32 CPU models
    got = model.generate(ids, max_new_tokens=3)
    assert "float32 CPU models (this one: torch.bfloat16 on cpu)" in model.actlab_generate_reason
    assert torch.equal(got, _plain(model, ids, max_new_tokens=3))


def test_switches(batches) -> None:  # noqa: ANN001
    model = _fast(_model("llama", "teal", batches), "teal")
    ids = _ids(batches)
    want = _routed(model, ids, max_new_tokens=4)
    model.actlab_native_generate = False
    assert torch.equal(model.generate(ids, max_new_tokens=4), want)
    assert "switched off" in model.actlab_generate_reason
    model.actlab_native_generate = True
    twin = copy.deepcopy(model)  # the routing is copied, bound to the copy
    assert twin.generate.__self__ is twin and torch.equal(
        _routed(twin, ids, max_new_tokens=4), want
    )
    native_generate(model, False)
    assert "generate" not in model.__dict__ and not hasattr(model, "actlab_generate_reason")
    other = _model("llama", "teal", batches)
    use_kernels(other, generate=False)
    assert "generate" not in other.__dict__
    with generate_routing(other, True):
        assert torch.equal(_routed(other, ids, max_new_tokens=4), want)
    assert "generate" not in other.__dict__
    with pytest.raises(SparseError, match="causal LM with generate"):
        native_generate(nn.Linear(2, 2))


def test_save_and_load_keep_working(tmp_path, batches) -> None:  # noqa: ANN001
    model, state, prompt = teal_char_llama()
    want = model.generate(prompt, max_new_tokens=8)  # HF, torch path
    use_kernels(model)
    assert torch.equal(_routed(model, prompt, max_new_tokens=8), want)
    save_sparse(tmp_path / "out", model, char_tokenizer(), state, name="char-llama")
    loaded = load_sparse(tmp_path / "out").model
    assert torch.equal(loaded.generate(prompt, max_new_tokens=8), want)
    use_kernels(loaded, torch.bfloat16)
    got = _routed(loaded, prompt, max_new_tokens=8)
    assert torch.equal(got, _plain(loaded, prompt, max_new_tokens=8))


def test_time_decode_through_generate(batches) -> None:  # noqa: ANN001
    model = _model("llama", "teal", batches)
    ids = _ids(batches)
    with pytest.raises(SparseError, match="did not run the native step.*use_kernels"):
        time_decode(model, ids, 3, lean=False, native=True, rounds=1, warmup=False)
    use_kernels(model)
    a = time_decode(model, ids, 5, lean=False, native=True, rounds=1, warmup=False)
    b = time_decode(model, ids, 5, lean=False, native=False, rounds=1, warmup=False)
    assert torch.equal(a.tokens, b.tokens) and a.tokens.shape == (5,)
    assert model.actlab_native_generate is True  # the routing is restored
