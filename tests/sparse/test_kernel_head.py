"""The LM head through the dense packed kernel: ``use_kernels(model, dtype, head=True)``.

Tolerances: float32 packing, every logit within ``1e-5 * sum_k |x_k w_k|`` of ``F.linear`` on
the float32 weight (float32 accumulation in another order); bf16 packing, the same bound
against ``F.linear`` on the bf16-rounded weight (the intended change; only the order differs)
and within ``2^-8 * sum_k |x_k w_k|`` of the float32 head (each weight rounded to bf16 moves by
at most 2^-9 of itself). Greedy tokens of the float32-head kernel model equal the torch path's.
Exercises the kernels: run under ``ACTLAB_NATIVE_ISA=AVX2`` and ``DEFAULT`` too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from decode_helpers import tiny_gemma3
from safetensors import safe_open
from sparse_eval_helpers import char_tokenizer, save_char_llama, teal_char_llama
from sparse_helpers import tiny_llama
from torch import nn

from actlab.cli import main
from actlab.data.errors import DatasetNotFoundError
from actlab.sparse import (
    LeanDecoder,
    SparseError,
    SparseLinear,
    drop_kernels,
    kernels_available,
    load_sparse,
    make_method,
    realised_sparsity,
    save_sparse,
    use_kernels,
)
from actlab.sparse._text import document

pytestmark = pytest.mark.skipif(not kernels_available(), reason="sparse kernels not built here")

DTYPES = (torch.float32, torch.bfloat16)
NEW = 10
_MODELS: dict[str, nn.Module] = {}


def _model(arch: str, batches: list[torch.Tensor], method: str = "teal") -> nn.Module:
    """A fresh TEAL 50% (decode mode) tiny Llama (untied head) or Gemma 3 (tied head)."""
    if arch not in _MODELS:
        _MODELS[arch] = tiny_llama(3, seed=3) if arch == "llama" else tiny_gemma3()
    model = copy.deepcopy(_MODELS[arch])
    m = make_method(method, sparsity=0.5)
    m.apply(model, m.calibrate(model, batches)).set_mode("decode")
    return model


def _spy(head: nn.Module, outs: list[torch.Tensor] | None = None) -> list[int]:
    """Count the head kernel's calls (rows per call; their outputs into ``outs``)."""
    kernel: Any = head.__dict__["_actlab_head_kernel"]
    calls: list[int] = []
    op: Callable[..., torch.Tensor] = kernel.op

    def counted(x: torch.Tensor, *args: Any) -> torch.Tensor:
        calls.append(int(x.shape[0]))
        y = op(x, *args)
        if outs is not None:
            outs.append(y)
        return y

    kernel.op = counted
    return calls


def _scale(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.linear(x.abs().double(), w.abs().double())  # sum_k |x_k w_k|


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_head_logits_match_f_linear(arch, dtype, batches) -> None:  # noqa: ANN001
    model = _model(arch, batches)
    head = model.get_output_embeddings()
    w = head.weight.detach().clone()
    report = use_kernels(model, dtype, head=True)
    assert report.head == "lm_head" and "lm_head" not in report.skipped, str(report)
    calls = _spy(head)
    g = torch.Generator().manual_seed(2)
    for shape in ((1, 1, 64), (3, 1, 64), (1, 2, 64), (8, 64)):  # batch 1, small batches
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            got = head(x)
        assert got.shape == (*shape[:-1], w.shape[0]) and got.dtype == torch.float32
        ref = w if dtype == torch.float32 else w.bfloat16().float()
        err = (got.double() - F.linear(x.double(), ref.double())).abs()
        assert bool((err <= 1e-5 * _scale(x, ref) + 1e-30).all()), float(err.max())
        full = (got.double() - F.linear(x.double(), w.double())).abs()
        assert bool((full <= 2.0**-8 * _scale(x, w) + 1e-30).all())
        if dtype == torch.bfloat16:
            assert not torch.equal(got, F.linear(x, w))  # the bf16 copy ran, not the weight
    assert calls == [1, 3, 2, 8]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_weights_tied_embedding_unchanged_report(arch, batches) -> None:  # noqa: ANN001
    model = _model(arch, batches)
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    tied = head.weight is emb.weight
    assert tied == (arch == "gemma3")  # Gemma 3 ties its head to the embedding, Llama here not
    weight, before = head.weight, emb.weight.detach().clone()
    keys = list(model.state_dict())
    plain = use_kernels(model, torch.bfloat16)
    report = use_kernels(model, torch.bfloat16, head=True)
    assert model.lm_head is head and type(head) is nn.Linear and head.weight is weight
    assert (head.weight is emb.weight) == tied
    assert torch.equal(emb.weight, before) and emb.weight.dtype == torch.float32
    assert list(model.state_dict()) == keys
    assert report.head_bytes == head.weight.numel() * 2  # one bf16 copy of [vocab, d]
    assert report.packed_bytes == plain.packed_bytes + report.head_bytes
    assert report.modules == plain.modules  # the head is not one of the sparse modules
    text = str(report)
    assert "+ head lm_head" in text.splitlines()[0] and "  head lm_head:" in text
    assert "head" not in str(plain)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_greedy_tokens_native_step_and_generate(arch, batches) -> None:  # noqa: ANN001
    model = _model(arch, batches)
    prompt = batches[0][:1, :9]  # longer than Gemma's window of 4
    want = model.generate(prompt, max_new_tokens=NEW, do_sample=False)  # torch path
    use_kernels(model, torch.float32, head=True)
    calls = _spy(model.lm_head)
    got = model.generate(prompt, max_new_tokens=NEW, do_sample=False)  # routed: native step
    assert model.actlab_generate_reason == "", model.actlab_generate_reason
    assert torch.equal(got, want)
    assert len(calls) == NEW and set(calls) == {1}  # prefill's last position and each step
    dec = LeanDecoder(model, 9 + NEW, native=True)
    assert torch.equal(dec.generate(prompt, NEW), want)
    assert len(calls) == 2 * NEW
    # bf16 packing: the native step's logits are the packed head's output
    use_kernels(model, torch.bfloat16, head=True)
    outs: list[torch.Tensor] = []
    calls = _spy(model.lm_head, outs)
    dec = LeanDecoder(model, 9 + NEW, native=True)
    assert dec.native is not None
    with torch.no_grad():
        dec.forward(prompt, 0)
        logits = dec.forward(prompt[:, -1:], 9)  # one native step
    assert calls == [1, 1] and torch.equal(logits, outs[-1][0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_drop_kernels_restores_the_head(dtype, batches) -> None:  # noqa: ANN001
    model = _model("gemma3", batches)
    head, weight = model.lm_head, model.lm_head.weight
    x = torch.randn(1, 1, 64)
    use_kernels(model, dtype, head=True)
    assert "forward" in head.__dict__
    assert drop_kernels(model) > 0
    assert model.lm_head is head and type(head) is nn.Linear and head.weight is weight
    assert "forward" not in head.__dict__ and "_actlab_head_kernel" not in head.__dict__
    assert weight is model.get_input_embeddings().weight
    with torch.no_grad():
        assert torch.equal(head(x), F.linear(x, weight))
    use_kernels(model, dtype, head=True)
    report = use_kernels(model, dtype)  # called again without head=True: the head is dropped
    assert not report.head and report.head_bytes == 0 and "forward" not in head.__dict__
    deep = copy.deepcopy(model)
    use_kernels(deep, dtype, head=True)  # a copy's head is its own (bound to the copy)
    assert deep.lm_head.forward.__self__ is deep.lm_head and "forward" not in head.__dict__


def test_skipped_heads_say_why(batches) -> None:  # noqa: ANN001
    model = _model("llama", batches)
    model.lm_head = SparseLinear.wrap(model.lm_head, -1.0)  # a sparse head: a sparse module
    report = use_kernels(model, torch.bfloat16, head=True)
    assert not report.head and "not a plain nn.Linear" in report.skipped["lm_head"]
    assert "lm_head" in report.modules and "skipped lm_head:" in str(report)
    model = _model("llama", batches)
    own = model.lm_head.forward
    model.lm_head.forward = own  # someone else's instance-level forward: left alone
    report = use_kernels(model, torch.bfloat16, head=True)
    assert "instance-level forward" in report.skipped["lm_head"]
    assert model.lm_head.__dict__["forward"] is own
    drop_kernels(model)
    assert model.lm_head.__dict__["forward"] is own  # not ours: kept


def test_long_forwards_and_autograd_take_torch(batches) -> None:  # noqa: ANN001
    model = _model("llama", batches)
    use_kernels(model, torch.bfloat16, max_rows=4, head=True)
    head = model.lm_head
    calls = _spy(head)
    w = head.weight
    x = torch.randn(1, 5, 64)  # 5 positions > max_rows: a prefill
    with torch.no_grad():
        assert torch.equal(head(x), F.linear(x, w))
        with pytest.raises(RuntimeError, match="dtype"):  # not float32: torch, its own error
            head(x[:, :1].double())
    xg = torch.randn(1, 1, 64, requires_grad=True)
    y = head(xg)  # autograd: torch, and the gradient reaches the weight
    assert torch.equal(y, F.linear(xg, w))
    y.sum().backward()
    assert w.grad is not None
    assert calls == []
    ids = batches[0][:1, :12]
    with torch.no_grad():
        full = model(ids).logits  # the prefill: 12 positions through the head, torch
        assert calls == []
        last = model(ids, logits_to_keep=1).logits  # generate's prefill: the last one, kernel
        assert calls == [1]
    drop_kernels(model)
    with torch.no_grad():
        assert torch.equal(full, model(ids).logits)
    assert last.shape == (1, 1, w.shape[0])


def test_bad_head_argument(batches) -> None:  # noqa: ANN001
    model = _model("llama", batches)
    for bad in ("yes", 1, None):
        with pytest.raises(SparseError, match="head must be True or False") as e:
            use_kernels(model, torch.bfloat16, head=bad)  # type: ignore[arg-type]
        assert "\n" not in str(e.value)
    assert "forward" not in model.lm_head.__dict__


def test_save_load_and_realised_sparsity_unaffected(tmp_path, batches) -> None:  # noqa: ANN001
    model, state, prompt = teal_char_llama()
    twin = copy.deepcopy(model)
    use_kernels(twin, torch.float32)
    use_kernels(model, torch.float32, head=True)
    for m in (model, twin):
        for sub in m.modules():
            if hasattr(sub, "reset_counts"):
                sub.reset_counts()
    a = model.generate(prompt, max_new_tokens=8)
    b = twin.generate(prompt, max_new_tokens=8)
    assert torch.equal(a, b)
    assert realised_sparsity(model) == realised_sparsity(twin)
    assert realised_sparsity(model)[0] > 0
    save_sparse(tmp_path / "head", model, char_tokenizer(), state, name="char-llama")
    save_sparse(tmp_path / "twin", twin, char_tokenizer(), state, name="char-llama")
    files = [tmp_path / d for d in ("head", "twin")]
    configs = [json.loads((d / "config.json").read_text()) for d in files]
    assert configs[0] == configs[1]
    saved = []
    for d in files:
        with safe_open(str(d / "sparsity.safetensors"), framework="pt") as f:
            saved.append((f.metadata(), {k: f.get_tensor(k) for k in f.keys()}))  # noqa: SIM118
    assert saved[0][0] == saved[1][0] and saved[0][1].keys() == saved[1][1].keys()
    assert all(torch.equal(v, saved[1][1][k]) for k, v in saved[0][1].items())
    loaded = load_sparse(tmp_path / "head").model
    assert type(loaded.lm_head) is nn.Linear and "forward" not in loaded.lm_head.__dict__
    ref = load_sparse(tmp_path / "twin").model
    for (n, p), (_, q) in zip(loaded.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(p, q), n
    assert torch.equal(loaded.generate(prompt, max_new_tokens=8), a)


def test_bench_has_the_bf16_head_row(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    try:
        document("play:comedies/twelfth-night")
        document("kjv:1:genesis")
    except (DatasetNotFoundError, SparseError) as e:
        pytest.skip(f"offline text not installed: {e}")
    tiny = save_char_llama(tmp_path / "tiny")
    argv = ["sparsify", str(tiny), "--method", "teal", "--sparsity", "0.0"]
    argv += ["--window", "32", "--calib-tokens", "256", "--bench", "--max-new-tokens", "4"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    rows = [ln for ln in text.splitlines() if "+ bf16 head" in ln and ln.startswith("| ")]
    paths = {r.split("|")[2].strip() for r in rows}
    assert paths == {"lean loop, native step", "generate, native step"}, text
    assert "'+ bf16 head' rows" in text
