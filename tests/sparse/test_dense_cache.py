"""The dense evaluation cache: a hit gives the rows of a fresh evaluation bit for bit, the key
follows every input, a bad entry is re-evaluated with one warning, a bad root never stops a run.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sparse_helpers import VOCAB

from actlab.sparse import DenseCache, compare_models, make_method, sparsity_curves


def _windows(n: int = 3, length: int = 16, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n, length), generator=g)


def _sparse(model: torch.nn.Module, batches: list[torch.Tensor], tuned: bool = False):
    method = make_method("teal", sparsity=0.5)
    state = method.calibrate(model, batches)
    sparse = copy.deepcopy(model)
    method.apply(sparse, state)
    if tuned:  # only its presence matters here: a tuned state runs its own prefill
        state.tuning = {"steps": 1}
    return sparse, state


def _same_rows(a: list[dict], b: list[dict]) -> None:
    skip = {"eval_seconds", "eval_cpu_seconds", "dense_cached", "calib_seconds",
            "calib_cpu_seconds"}  # fmt: skip
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in skip} == {
            k: v for k, v in rb.items() if k not in skip
        }


@pytest.mark.parametrize("protocol", ["decode", "last-half"])
@pytest.mark.parametrize("tuned", [False, True])
def test_a_hit_gives_the_rows_of_a_fresh_evaluation(
    llama: torch.nn.Module, batches: list, tmp_path: Path, protocol: str, tuned: bool
) -> None:
    sparse, state = _sparse(llama, batches, tuned)
    w = _windows()
    cache = DenseCache(tmp_path / "c")
    lines: list[str] = []
    fresh = compare_models(llama, sparse, state, w, protocol=protocol, progress=None)
    first = compare_models(llama, sparse, state, w, protocol=protocol, progress=lines.append,
                           dense_cache=cache)  # fmt: skip
    assert len(list((tmp_path / "c").glob("*.safetensors"))) == 1
    assert any("result cached in" in ln for ln in lines) and first[0]["dense_cached"] == ""
    lines.clear()
    again = compare_models(llama, sparse, state, w, protocol=protocol, progress=lines.append,
                           dense_cache=cache)  # fmt: skip
    assert not any("dense: evaluating" in ln for ln in lines)
    assert any("read from" in ln for ln in lines)
    assert again[0]["dense_cached"].endswith(".safetensors")
    _same_rows(fresh, first)
    _same_rows(fresh, again)  # ppl, agreement, delta and its interval: equal, not close


def test_curves_use_the_cache_too(llama: torch.nn.Module, batches: list, tmp_path: Path) -> None:
    cache = DenseCache(tmp_path)
    w = _windows()
    kw = {"methods": ["teal"], "sparsities": [0.5], "progress": None}
    fresh = sparsity_curves(llama, batches, w, **kw)
    sparsity_curves(llama, batches, w, dense_cache=cache, **kw)
    lines: list[str] = []
    again = sparsity_curves(llama, batches, w, dense_cache=cache,
                            **{**kw, "progress": lines.append})  # fmt: skip
    assert any("read from" in ln for ln in lines)
    _same_rows(fresh, again)


def test_the_key_follows_every_input(llama: torch.nn.Module, tmp_path: Path) -> None:
    cache = DenseCache(tmp_path)
    w = _windows()
    base = cache.key(llama, w, "decode", 8, 64)
    assert cache.key(copy.deepcopy(llama), w.clone(), "decode", 8, 64) == base
    other = copy.deepcopy(llama)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-6
    changed = [
        cache.key(other, w, "decode", 8, 64),
        cache.key(llama, _windows(seed=4), "decode", 8, 64),
        cache.key(llama, w[:2], "decode", 8, 64),
        cache.key(llama, w, "last-half", 8, 64),
        cache.key(llama, w, "decode", 7, 64),
        cache.key(llama, w, "decode", 8, 2),
        cache.key(llama.double(), w, "decode", 8, 64),
    ]
    n = torch.get_num_threads()
    torch.set_num_threads(1 if n > 1 else 2)
    try:
        changed.append(cache.key(llama.float(), w, "decode", 8, 64))
    finally:
        torch.set_num_threads(n)
    assert len({base, *changed}) == len(changed) + 1


def test_a_bad_entry_is_evaluated_again_with_one_warning(
    llama: torch.nn.Module, batches: list, tmp_path: Path
) -> None:
    sparse, state = _sparse(llama, batches)
    w = _windows()
    cache = DenseCache(tmp_path)
    fresh = compare_models(llama, sparse, state, w, progress=None, dense_cache=cache)
    (entry,) = tmp_path.glob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = compare_models(llama, sparse, state, w, progress=None, dense_cache=cache)
    _same_rows(fresh, again)
    assert entry.is_file()  # written again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compare_models(llama, sparse, state, w, progress=None, dense_cache=cache)


def test_an_unwritable_root_warns_and_the_run_goes_on(
    llama: torch.nn.Module, batches: list, tmp_path: Path
) -> None:
    sparse, state = _sparse(llama, batches)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="cannot write the dense cache"):
        rows = compare_models(llama, sparse, state, _windows(), progress=None,
                              dense_cache=DenseCache(blocker / "eval"))  # fmt: skip
    assert rows[0]["method"] == "dense" and rows[1]["ppl"] > 0


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=600))
def test_the_reader_survives_any_bytes(tmp_path: Path, data: bytes) -> None:
    cache = DenseCache(tmp_path)
    cache.path("k").parent.mkdir(parents=True, exist_ok=True)
    cache.path("k").write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert cache.load("k", 3) is None
    assert not cache.path("k").exists()


def test_an_entry_for_other_windows_is_not_used(tmp_path: Path) -> None:
    cache = DenseCache(tmp_path)
    fields = {
        "protocol": "decode", "ppl": 2.0, "nll": 0.69, "windows": 3, "window": 16, "prefill": 8,
        "scored": 21, "seconds": 1.0, "cpu_seconds": 1.0, "batch_size": 64, "realised": 0.0,
        "overhead": 0.0, "by_projection": {}, "argmax": torch.zeros(3, 7, dtype=torch.long),
        "window_nll": torch.zeros(3, dtype=torch.float64),
    }  # fmt: skip
    assert cache.save("k", fields) == cache.path("k")
    assert cache.load("k", 3) is not None
    with pytest.warns(RuntimeWarning, match="do not match"):
        assert cache.load("k", 4) is None
