"""tune_gains: distilling the normalisation gains of a sparsified model to the dense model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sparse_helpers import VOCAB, randomise_norms

from actlab.sparse import (
    SparseError,
    SparsityState,
    TuneConfig,
    apply_state,
    evaluate,
    gain_parameters,
    load_state,
    make_method,
    sparsity_curves,
    tune_gains,
)
from actlab.sparse._state import FORMAT_KEY
from actlab.sparse._tune import split_tune


def _windows(n: int = 8, length: int = 24, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (2, length), generator=g) for _ in range(n // 2)]


def _kl(dense: torch.nn.Module, state: SparsityState, ids: torch.Tensor) -> float:
    """Mean KL(dense || sparse) over the second half of ``ids``, the sparse model in mode
    "last-half", computed in float64 from scratch (the oracle of the tuning loss)."""
    sparse = copy.deepcopy(dense)
    apply_state(sparse, state).set_mode("last-half")
    half = ids.shape[1] // 2
    with torch.no_grad():
        p = F.log_softmax(dense(ids).logits[:, half:-1].double(), -1)
        q = F.log_softmax(sparse(ids).logits[:, half:-1].double(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


_TUNED = {"steps": 1}


def _write(folder: Path, version: int, tensors: dict, tuning: object = _TUNED) -> Path:
    """A state file of format ``version`` holding ``tensors``, its header's ``tuning`` given
    (None: no tuning in the header)."""
    from safetensors.torch import save_file

    header: dict = {"version": version, "method": "teal", "params": {}, "targets": {}}
    if tuning is not None:
        header["tuning"] = tuning
    p = folder / f"s{len(list(folder.iterdir()))}.safetensors"
    save_file(tensors, str(p), metadata={FORMAT_KEY: json.dumps(header)})
    return p


def _assert_refused(model: torch.nn.Module, state: SparsityState, match: str) -> None:
    """``apply_state`` refuses ``state`` with ``match`` before changing a copy of ``model``."""
    fresh = copy.deepcopy(model)
    with pytest.raises(SparseError, match=match):
        apply_state(fresh, state)
    assert not any("Sparse" in type(m).__name__ for m in fresh.modules())


@pytest.fixture
def tuned_setup(llama: torch.nn.Module) -> tuple[torch.nn.Module, SparsityState, list]:
    randomise_norms(llama)
    data = _windows()
    state = make_method("teal", sparsity=0.5).calibrate(llama, data)
    return llama, state, data


def test_tuning_lowers_the_kl_and_changes_only_the_gains(tuned_setup: tuple) -> None:
    model, state, data = tuned_setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = tune_gains(model, state, data, TuneConfig(steps=40, lr=1e-2, batch=4))
    for k, v in model.state_dict().items():  # the dense model is not changed
        assert torch.equal(v, before[k]), k
    assert tuned.thresholds.keys() == state.thresholds.keys()
    for k, t in state.thresholds.items():
        assert tuned.thresholds[k] == t
    assert tuned.targets == state.targets and tuned.method == "teal"
    assert set(tuned.gains) == set(gain_parameters(model))  # 2 per block + the final norm
    assert len(tuned.gains) == 5
    assert any(not torch.equal(g, before[k]) for k, g in tuned.gains.items())
    t = tuned.tuning
    assert (t["steps"], t["lr"], t["batch"], t["seed"]) == (40, 1e-2, 4, 0)
    assert (t["windows"], t["window"], t["params"]) == (8, 24, 5 * 64)
    ids = torch.cat(data)
    kl0, kl1 = _kl(model, state, ids), _kl(model, tuned, ids)
    assert kl1 < 0.8 * kl0, (kl0, kl1)
    # the same seed gives the same gains
    again = tune_gains(model, state, data, TuneConfig(steps=40, lr=1e-2, batch=4))
    assert again == tuned


def test_apply_writes_the_gains_and_the_state_round_trips(
    tuned_setup: tuple, tmp_path: Path
) -> None:
    model, state, data = tuned_setup
    tuned = tune_gains(model, state, data, TuneConfig(steps=3, lr=1e-2))
    fresh = copy.deepcopy(model)
    apply_state(fresh, tuned)
    params = dict(fresh.named_parameters())
    for k, g in tuned.gains.items():
        assert torch.equal(params[k].detach(), g)
    path = tuned.save(tmp_path / "tuned.safetensors")
    assert load_state(path) == tuned
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()[FORMAT_KEY])
    assert header["version"] == 2 and header["tuning"]["steps"] == 3
    plain = state.save(tmp_path / "plain.safetensors")
    with safe_open(str(plain), framework="pt") as f:
        assert json.loads(f.metadata()[FORMAT_KEY])["version"] == 1
    assert load_state(plain).gains == {}


def test_a_bf16_model_is_tuned_in_float32(tuned_setup: tuple) -> None:
    model, state, data = tuned_setup
    half = copy.deepcopy(model).to(torch.bfloat16)
    tuned = tune_gains(half, state, data, TuneConfig(steps=2, lr=1e-2))
    assert all(g.dtype == torch.float32 for g in tuned.gains.values())
    apply_state(half, tuned)
    assert next(iter(gain_parameters(half).values())).dtype == torch.bfloat16


def test_a_dense_state_is_returned_unchanged(llama: torch.nn.Module) -> None:
    data = _windows()
    state = make_method("teal", sparsity=0.0).calibrate(llama, data)
    assert tune_gains(llama, state, data, TuneConfig(steps=5)) is state


def test_gains_of_another_model_are_refused_before_any_change(tuned_setup: tuple) -> None:
    model, state, data = tuned_setup
    tuned = tune_gains(model, state, data, TuneConfig(steps=1))
    wrong = copy.deepcopy(tuned)
    wrong.gains["model.layers.9.input_layernorm.weight"] = torch.ones(64)
    fresh = copy.deepcopy(model)
    with pytest.raises(SparseError, match="no parameter 'model.layers.9.input_layernorm"):
        apply_state(fresh, wrong)
    assert not any("Sparse" in type(m).__name__ for m in fresh.modules())
    wrong = copy.deepcopy(tuned)
    wrong.gains["model.norm.weight"] = torch.ones(3)
    with pytest.raises(SparseError, match=r"has shape \(3,\), the model's \(64,\)"):
        apply_state(copy.deepcopy(model), wrong)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"steps": True}, "steps must be an integer"),
        ({"steps": 2, "batch": 0}, "batch must be an integer >= 1"),
        ({"steps": 2, "seed": -1}, "seed must be an integer >= 0"),
        ({"steps": 2, "lr": 0.0}, "lr must be a positive number"),
        ({"steps": 2, "lr": float("nan")}, "lr must be a positive number"),
        ({"steps": 2, "lr": "big"}, "lr must be a positive number"),
        ({"steps": 2, "rows": "yes"}, "rows must be true or false"),
        ({"steps": 2, "rows": 1}, "rows must be true or false"),
        ({"steps": 2, "rank": -1}, "rank must be an integer >= 0"),
        ({"steps": 2, "rank": 1.5}, "rank must be an integer >= 0"),
        ({"steps": 2, "weights": "yes"}, "weights must be true or false"),
        ({"steps": 2, "weights_lr": 0.0}, "weights_lr must be a positive number"),
        ({"steps": 2, "weights_lr": float("inf")}, "weights_lr must be a positive number"),
        ({"steps": 2, "hidden": -1.0}, "hidden must be a number >= 0"),
        ({"steps": 2, "hidden": float("nan")}, "hidden must be a number >= 0"),
        ({"steps": 2, "hidden": True}, "hidden must be a number >= 0"),
        ({"steps": 2, "hidden": "1"}, "hidden must be a number >= 0"),
    ],
)
def test_bad_tuning_settings_are_one_line(kwargs: dict, match: str) -> None:
    with pytest.raises(SparseError, match=match):
        TuneConfig(**kwargs)


def test_split_tune() -> None:
    assert split_tune({"allocation": "greedy"}) == ({"allocation": "greedy"}, None)
    assert split_tune({"tune_steps": 0}) == ({}, None)
    rest, cfg = split_tune({"allocation": "greedy", "tune_steps": 7, "tune_lr": 0.01})
    assert rest == {"allocation": "greedy"} and cfg == TuneConfig(steps=7, lr=0.01)
    with pytest.raises(SparseError, match="tune_lr given without tune_steps"):
        split_tune({"tune_lr": 0.01})
    assert split_tune({"tune_steps": 3, "tune_rows": True})[1] == TuneConfig(steps=3, rows=True)
    with pytest.raises(SparseError, match="tune_rows given without tune_steps"):
        split_tune({"tune_rows": True})


def test_bad_input_to_tune_gains(tuned_setup: tuple) -> None:
    model, state, data = tuned_setup
    cfg = TuneConfig(steps=1)
    with pytest.raises(SparseError, match="needs a SparsityState"):
        tune_gains(model, {"thresholds": {}}, data, cfg)  # type: ignore[arg-type]
    with pytest.raises(SparseError, match="no calibration windows"):
        tune_gains(model, state, [], cfg)
    with pytest.raises(SparseError, match="at least 4 tokens"):
        tune_gains(model, state, [torch.ones(2, 3, dtype=torch.long)], cfg)
    tuned = tune_gains(model, state, data, cfg)
    with pytest.raises(SparseError, match="tuned already"):
        tune_gains(model, tuned, data, cfg)
    with pytest.raises(SparseError, match="must say how they were tuned"):
        SparsityState("teal", {}, {}, gains={"a": torch.ones(2)})
    with pytest.raises(SparseError, match="not finite"):
        SparsityState(
            "teal", {}, {}, gains={"a": torch.tensor([1.0, float("inf")])}, tuning={"x": 1}
        )


def test_a_header_that_disagrees_with_the_gains_is_refused(tmp_path: Path) -> None:
    gain = {"gain:model.norm.weight": torch.ones(4)}
    with pytest.raises(SparseError, match="does not match the 0 tuned gains"):
        load_state(_write(tmp_path, 2, {"a": torch.tensor(0.5)}, {"steps": 1}))
    with pytest.raises(SparseError, match="does not match the 1 tuned gains"):
        load_state(_write(tmp_path, 1, gain, None))
    with pytest.raises(SparseError, match="tuning is not an object"):
        load_state(_write(tmp_path, 2, gain, [1]))
    with pytest.raises(SparseError, match="not a float32 vector"):
        load_state(_write(tmp_path, 2, {"gain:x": torch.ones(2, 2)}, {"steps": 1}))
    with pytest.raises(SparseError, match="version 3"):
        load_state(_write(tmp_path, 3, gain, {"steps": 1}))
    assert load_state(_write(tmp_path, 2, gain, {"steps": 1})).gains.keys() == {"model.norm.weight"}


def test_sparsity_curves_tune_the_points_of_a_label(llama: torch.nn.Module) -> None:
    data = _windows()
    held = torch.randint(3, VOCAB, (2, 24), generator=torch.Generator().manual_seed(9))
    rows = sparsity_curves(
        llama,
        data,
        held,
        methods=["teal", "tuned=teal"],
        sparsities=[0.5],
        params={"tuned": {"tune_steps": 2, "tune_lr": 0.01}},
        protocol="last-half",
        progress=None,
    )
    assert [(r["method"], r["tuning"].get("steps")) for r in rows] == [
        ("dense", None),
        ("teal", None),
        ("tuned", 2),
    ]
    assert rows[2]["tuning"]["lr"] == 0.01 and "tune_steps" not in rows[2]["params"]
    with pytest.raises(SparseError, match="tune_steps must be|tune steps must be"):
        sparsity_curves(
            llama, data, held, methods=["teal"], params={"teal": {"tune_steps": -1}}, progress=None
        )


def test_a_tuned_point_decodes_from_its_own_prefill(llama: torch.nn.Module) -> None:
    """Under the decode protocol a tuned model's KV caches come from its own (dense-mode)
    prefill, as when deployed, not from the dense model's caches: the tuned gains change it."""
    data = _windows()
    held = torch.randint(3, VOCAB, (2, 24), generator=torch.Generator().manual_seed(9))
    tune = {"tune_steps": 2, "tune_lr": 0.05}
    rows = sparsity_curves(
        llama, data, held, methods=["teal"], sparsities=[0.5], params={"teal": tune},
        protocol="decode", progress=None,
    )  # fmt: skip
    method = make_method("teal", sparsity=0.5)
    state = tune_gains(llama, method.calibrate(llama, data), data, TuneConfig(steps=2, lr=0.05))
    sparse = copy.deepcopy(llama)
    method.apply(sparse, state)
    cached = evaluate(llama, held, protocol="decode", keep_prefill=True)
    own = evaluate(sparse, held, protocol="decode", reference=evaluate(llama, held))
    stale = evaluate(sparse, held, protocol="decode", reference=cached)  # the dense caches
    assert rows[1]["ppl"] == own.ppl and rows[1]["agreement"] == own.agreement
    assert stale.ppl != own.ppl


@pytest.mark.parametrize("rows", [False, True])
def test_gains_tuned_on_a_rotated_model_apply_after_the_rotation(
    llama: torch.nn.Module, rows: bool
) -> None:
    randomise_norms(llama)
    data = _windows()
    state = make_method("teal", sparsity=0.5, rotation="pca").calibrate(llama, data)
    tuned = tune_gains(llama, state, data, TuneConfig(steps=30, lr=1e-2, rows=rows, rank=int(rows)))
    assert bool(tuned.scales) is rows and bool(tuned.lowrank) is rows
    ids = torch.cat(data)
    kl0, kl1 = _kl(llama, state, ids), _kl(llama, tuned, ids)
    assert kl1 < 0.8 * kl0, (kl0, kl1)  # gains (and rows) written in the basis they were tuned in


# ---------------------------------------------------------------- output-row scales (rows=True)


def test_row_scales_lower_the_kl_and_scale_the_weight_rows(tuned_setup: tuple) -> None:
    model, state, data = tuned_setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = tune_gains(model, state, data, TuneConfig(steps=40, lr=1e-2, rows=True))
    for k, v in model.state_dict().items():  # the dense model is not changed
        assert torch.equal(v, before[k]), k
    assert set(tuned.scales) == set(state.thresholds)  # TEAL: every site is a linear
    lin = dict(model.named_modules())
    assert all(r.shape == (lin[k].out_features,) for k, r in tuned.scales.items())
    assert any(not torch.equal(r, torch.ones_like(r)) for r in tuned.scales.values())
    n_gains = sum(g.numel() for g in tuned.gains.values())
    n_rows = sum(r.numel() for r in tuned.scales.values())
    assert tuned.tuning["params"] == n_gains + n_rows and tuned.tuning["rows"] is True
    ids = torch.cat(data)
    kl0, kl1 = _kl(model, state, ids), _kl(model, tuned, ids)
    assert kl1 < 0.8 * kl0, (kl0, kl1)
    # apply: each scaled weight is the dense weight with its rows multiplied (float64 oracle)
    sparse = copy.deepcopy(model)
    apply_state(sparse, tuned)
    params = dict(sparse.named_parameters())
    for k, r in tuned.scales.items():
        want = before[f"{k}.weight"].double() * r.double().unsqueeze(1)
        assert torch.allclose(params[f"{k}.weight"].double(), want, rtol=1e-6, atol=0), k
    assert tune_gains(model, state, data, TuneConfig(steps=40, lr=1e-2, rows=True)) == tuned


def test_row_scales_of_a_gated_mlp_site_cover_gate_up_and_down(llama: torch.nn.Module) -> None:
    data = _windows()
    state = make_method("cats", sparsity=0.5).calibrate(llama, data)
    tuned = tune_gains(llama, state, data, TuneConfig(steps=2, lr=1e-2, rows=True))
    want = {f"{s}.{p}" for s in state.thresholds for p in ("gate_proj", "up_proj", "down_proj")}
    assert set(tuned.scales) == want


def test_row_scales_round_trip_as_version_3_and_are_applied_once(
    tuned_setup: tuple, tmp_path: Path
) -> None:
    from safetensors import safe_open

    from actlab.sparse._base import SCALES_KEY, scales_digest

    model, state, data = tuned_setup
    tuned = tune_gains(model, state, data, TuneConfig(steps=3, lr=1e-2, rows=True))
    path = tuned.save(tmp_path / "rows.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()[FORMAT_KEY])["version"] == 3
    back = load_state(path)
    assert back == tuned and back.scales.keys() == tuned.scales.keys()
    a = copy.deepcopy(model)
    apply_state(a, tuned)
    assert getattr(a.config, SCALES_KEY) == scales_digest(tuned)
    # a copy of the scaled weights (what a saved and reloaded model is) is not scaled again
    b = copy.deepcopy(model)
    b.load_state_dict(a.state_dict())
    setattr(b.config, SCALES_KEY, scales_digest(tuned))
    apply_state(b, tuned)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), k
    # but weights holding another state's scales are refused before any change
    other = copy.deepcopy(tuned)
    other.scales = {k: r * 2 for k, r in tuned.scales.items()}
    c = copy.deepcopy(model)
    setattr(c.config, SCALES_KEY, scales_digest(tuned))
    with pytest.raises(SparseError, match="already hold the row scales or low-rank corrections"):
        apply_state(c, other)
    assert not any("Sparse" in type(m).__name__ for m in c.modules())


def test_row_scales_of_another_model_are_refused_before_any_change(tuned_setup: tuple) -> None:
    model, state, data = tuned_setup
    tuned = tune_gains(model, state, data, TuneConfig(steps=1, rows=True))
    for path, r, match in (
        ("model.layers.9.mlp.up_proj", torch.ones(128), "no linear 'model.layers.9.mlp.up_proj'"),
        ("model.layers.0.mlp.up_proj", torch.ones(3), "have 3 entries, the linear"),
    ):
        wrong = copy.deepcopy(tuned)
        wrong.scales[path] = r
        _assert_refused(model, wrong, match)


def test_bad_row_scales_and_headers_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SparseError, match="must have its tuned gains too"):
        SparsityState("teal", {}, {}, scales={"a": torch.ones(2)})
    with pytest.raises(SparseError, match="row scales 'a' must be a 1-D float tensor"):
        SparsityState(
            "teal", {}, {}, gains={"g": torch.ones(2)}, tuning={"x": 1},
            scales={"a": torch.ones(2, 2)},
        )  # fmt: skip
    with pytest.raises(SparseError, match="row scales 'a' are not finite"):
        SparsityState(
            "teal", {}, {}, gains={"g": torch.ones(2)}, tuning={"x": 1},
            scales={"a": torch.tensor([1.0, float("nan")])},
        )  # fmt: skip

    both = {"gain:model.norm.weight": torch.ones(4)}
    both["scale:model.layers.0.mlp.up_proj"] = torch.ones(8)
    with pytest.raises(SparseError, match="version 2.*1 row scales"):
        load_state(_write(tmp_path, 2, both))
    with pytest.raises(SparseError, match="gain or row scale .* is not a float32 vector"):
        load_state(_write(tmp_path, 3, {**both, "scale:x": torch.ones(2, dtype=torch.float64)}))
    assert load_state(_write(tmp_path, 3, both)).scales.keys() == {"model.layers.0.mlp.up_proj"}


@pytest.mark.parametrize(("rank", "weights"), [(0, False), (2, False), (2, True)])
def test_the_fingerprint_of_tuned_weights_is_the_dense_models(
    tuned_setup: tuple, tmp_path: Path, rank: int, weights: bool
) -> None:
    from actlab.sparse import apply_saved_state, model_fingerprint, save_sparse

    model, state, data = tuned_setup
    cfg = TuneConfig(steps=1, rows=True, rank=rank, weights=weights)
    tuned = tune_gains(model, state, data, cfg)
    big = copy.deepcopy(tuned)  # scales far from 1: the raw mean |W| would move by ~50%
    big.scales = {k: torch.full_like(r, 1.5) for k, r in tuned.scales.items()}
    # corrections and weight changes as large as the weights
    big.lowrank = {k: (u + 0.3, v + 1.0) for k, (u, v) in tuned.lowrank.items()}
    big.deltas = {k: d + 0.2 for k, d in tuned.deltas.items()}
    sparse = copy.deepcopy(model)
    apply_state(sparse, big)
    assert model_fingerprint(sparse)["weights"] != pytest.approx(
        model_fingerprint(model)["weights"], rel=0.01
    )
    assert model_fingerprint(sparse, state=big)["weights"] == pytest.approx(
        model_fingerprint(model)["weights"], rel=1e-6
    )
    out = save_sparse(tmp_path / "big", sparse, None, big)
    fresh = copy.deepcopy(model)
    apply_saved_state(fresh, out)  # the dense model passes the check and is changed once
    for (k, p), q in zip(fresh.state_dict().items(), sparse.state_dict().values(), strict=True):
        assert torch.equal(p, q), k


def test_forward_logits_runs_the_head_on_the_kept_positions(llama: torch.nn.Module) -> None:
    """The tuning and the evaluation score the last positions only: the same logits as the
    full forward's, sliced (the LM head is position-wise)."""
    from actlab.sparse._calls import forward_logits

    ids = torch.cat(_windows(n=2))
    with torch.no_grad():
        full = llama(ids).logits
        part = forward_logits(llama, ids, 9).logits
    assert part.shape == (ids.shape[0], 9, full.shape[-1])
    torch.testing.assert_close(part, full[:, -9:], rtol=1e-5, atol=1e-5)


def _teacher_windows() -> torch.Tensor:
    return torch.cat(_windows(n=6, length=20))  # [6, 20]


def test_the_teacher_cache_gives_the_dense_logits(llama: torch.nn.Module) -> None:
    """The cached final hidden states through the head are the dense model's logits of the
    scored positions, window by window (and the cache is in use)."""
    from actlab.sparse._tune import _Teacher

    windows = _teacher_windows()
    teacher = _Teacher(llama, windows, 10, 4, torch.device("cpu"))
    assert teacher.hidden is not None and teacher.hidden.shape[:2] == (6, 10)
    index = torch.tensor([5, 0, 3])
    with torch.no_grad():
        want = llama(windows[index]).logits[:, -10:]
    torch.testing.assert_close(teacher.logits(index, windows[index]), want, rtol=1e-5, atol=1e-5)


def test_the_teacher_runs_the_model_where_the_head_is_not_the_logits(
    llama: torch.nn.Module,
) -> None:
    """A model that post-processes its head's output (a soft cap here) is run every step,
    and so is one whose cache would be too large: the logits stay the model's."""
    from actlab.sparse._tune import _Teacher

    windows = _teacher_windows()
    index = torch.tensor([1, 4])

    def cap(module: torch.nn.Module, args: object, out: object) -> object:
        out.logits = 3.0 * torch.tanh(out.logits / 3.0)  # type: ignore[attr-defined]
        return out

    handle = llama.register_forward_hook(cap)
    try:
        capped = _Teacher(llama, windows, 10, 4, torch.device("cpu"))
        assert capped.hidden is None
        with torch.no_grad():
            want = llama(windows[index]).logits[:, -10:]
        torch.testing.assert_close(capped.logits(index, windows[index]), want)
    finally:
        handle.remove()
    small = _Teacher(llama, windows, 10, 4, torch.device("cpu"), max_bytes=1024)
    assert small.hidden is None
    with torch.no_grad():
        want = llama(windows[index]).logits[:, -10:]
    torch.testing.assert_close(small.logits(index, windows[index]), want)


# ---------------------------------------------------------------- low-rank corrections (rank=r)


@pytest.mark.parametrize(
    ("kind", "bias", "rank"),
    [("plain", False, 0), ("plain", True, 0), ("sparse", False, 3), ("sparse", True, 3)]
    + [("plain", True, 3)],
)
def test_tuning_hooks_are_the_tuned_weight(kind: str, bias: bool, rank: int) -> None:
    """The tuning's low-rank correction ``W x + U (V x)`` on the input the linear reads
    (entries dropped; rank 0: none), then the row hook ``y = r * (W x) + b``, against the
    linear with the tuned weight ``(diag(r) (W + U V)) x_read + b`` in float64: the same
    outputs and the same gradients in U, V, r and x."""
    from actlab.sparse._modules import SparseLinear
    from actlab.sparse._tune import _LowRank, _RowScale

    lin = torch.nn.Linear(7, 5, bias=bias).double()
    if kind == "sparse":
        lin = SparseLinear.wrap(lin, 0.4)
    low = _LowRank(lin, max(rank, 1), torch.Generator().manual_seed(0))
    scale = _RowScale(5, lin.weight)
    with torch.no_grad():
        low.u.copy_(torch.randn(5, low.u.shape[1], dtype=torch.float64) * (rank > 0))
        scale.r.copy_(torch.linspace(0.5, 1.5, 5, dtype=torch.float64))
    ref = {k: t.detach().clone().requires_grad_(True) for k, t in (("u", low.u), ("v", low.v))}
    r_ref = scale.r.detach().clone().requires_grad_(True)
    x = torch.randn(3, 4, 7, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    read = x_ref * (x_ref.abs() > 0.4) if kind == "sparse" else x_ref
    weight = lin.weight + ref["u"] @ ref["v"] if rank else lin.weight
    want = F.linear(read, weight * r_ref.unsqueeze(1), lin.bias)
    if rank:
        low.attach(lin)
    scale.attach(lin)
    got = lin(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(got)
    got.backward(g)
    want.backward(g)
    for name, p in (("u", low.u), ("v", low.v)) if rank else ():
        torch.testing.assert_close(p.grad, ref[name].grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(scale.r.grad, r_ref.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)


def _n_tuned(tuned: SparsityState) -> int:
    """The number of tuned values a state holds (gains, row scales, factors, weight changes)."""
    n = sum(g.numel() for g in tuned.gains.values()) + sum(r.numel() for r in tuned.scales.values())
    n += sum(u.numel() + v.numel() for u, v in tuned.lowrank.values())
    return n + sum(d.numel() for d in tuned.deltas.values())


def _assert_beats_rows_only(
    model: torch.nn.Module, state: SparsityState, data: list, tuned: SparsityState
) -> None:
    """``tuned`` lowers the KL of ``state`` by 20% and below what rows alone reach."""
    ids = torch.cat(data)
    kl0, kl1 = _kl(model, state, ids), _kl(model, tuned, ids)
    rows_only = tune_gains(model, state, data, TuneConfig(steps=40, lr=1e-2, rows=True))
    assert kl1 < 0.8 * kl0 and kl1 < _kl(model, rows_only, ids), (kl0, kl1)


def test_low_rank_corrections_lower_the_kl_and_are_merged_into_the_weights(
    tuned_setup: tuple,
) -> None:
    model, state, data = tuned_setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TuneConfig(steps=40, lr=1e-2, rows=True, rank=2)
    tuned = tune_gains(model, state, data, cfg)
    for k, v in model.state_dict().items():  # the dense model is not changed
        assert torch.equal(v, before[k]), k
    lin = dict(model.named_modules())
    assert set(tuned.lowrank) == set(tuned.scales) == set(state.thresholds)
    for k, (u, v) in tuned.lowrank.items():
        assert u.shape == (lin[k].out_features, 2) and v.shape == (2, lin[k].in_features), k
    assert tuned.tuning["params"] == _n_tuned(tuned) and tuned.tuning["rank"] == 2
    _assert_beats_rows_only(model, state, data, tuned)
    # apply: each weight is diag(r) (W + U V) of the dense weight (float64 oracle)
    sparse = copy.deepcopy(model)
    apply_state(sparse, tuned)
    params = dict(sparse.named_parameters())
    for k, (u, v) in tuned.lowrank.items():
        want = (before[f"{k}.weight"].double() + u.double() @ v.double()) * (
            tuned.scales[k].double().unsqueeze(1)
        )
        torch.testing.assert_close(params[f"{k}.weight"].double(), want, rtol=1e-6, atol=1e-7)
    assert tune_gains(model, state, data, cfg) == tuned  # deterministic


def test_low_rank_corrections_of_a_gated_mlp_site_cover_gate_up_and_down(
    llama: torch.nn.Module,
) -> None:
    data = _windows()
    state = make_method("cats", sparsity=0.5).calibrate(llama, data)
    tuned = tune_gains(llama, state, data, TuneConfig(steps=2, lr=1e-2, rank=1))
    want = {f"{s}.{p}" for s in state.thresholds for p in ("gate_proj", "up_proj", "down_proj")}
    assert set(tuned.lowrank) == want and not tuned.scales


def test_low_rank_corrections_round_trip_as_version_4_and_are_applied_once(
    tuned_setup: tuple, tmp_path: Path
) -> None:
    from safetensors import safe_open

    from actlab.sparse._base import SCALES_KEY, scales_digest

    model, state, data = tuned_setup
    rows = tune_gains(model, state, data, TuneConfig(steps=3, lr=1e-2, rows=True))
    tuned = tune_gains(model, state, data, TuneConfig(steps=3, lr=1e-2, rows=True, rank=2))
    path = tuned.save(tmp_path / "lowrank.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()[FORMAT_KEY])["version"] == 4
    back = load_state(path)
    assert back == tuned and back.lowrank.keys() == tuned.lowrank.keys()
    assert back != rows and scales_digest(tuned) != scales_digest(rows)
    without = copy.deepcopy(tuned)
    without.lowrank = {}
    assert scales_digest(without) == scales_digest(  # no corrections: the version-3 digest
        SparsityState("teal", {}, {}, gains=tuned.gains, tuning=tuned.tuning, scales=tuned.scales)
    )
    a = copy.deepcopy(model)
    apply_state(a, tuned)
    assert getattr(a.config, SCALES_KEY) == scales_digest(tuned)
    b = copy.deepcopy(model)  # a copy of the corrected weights (a reloaded model): not again
    b.load_state_dict(a.state_dict())
    setattr(b.config, SCALES_KEY, scales_digest(tuned))
    apply_state(b, tuned)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), k
    c = copy.deepcopy(model)  # weights holding another state's tuned weights: refused
    setattr(c.config, SCALES_KEY, scales_digest(rows))
    with pytest.raises(SparseError, match="already hold the row scales or low-rank"):
        apply_state(c, tuned)
    assert not any("Sparse" in type(m).__name__ for m in c.modules())


@pytest.mark.parametrize("kind", ["lowrank", "deltas"])
def test_tuned_weights_of_another_model_are_refused_before_any_change(
    tuned_setup: tuple, kind: str
) -> None:
    """A low-rank correction (weight change) for a linear the model lacks, or of another
    shape, is one line before anything changes."""
    model, state, data = tuned_setup
    cfg = TuneConfig(steps=1, rank=1) if kind == "lowrank" else TuneConfig(steps=1, weights=True)
    tuned = tune_gains(model, state, data, cfg)
    up = "model.layers.0.mlp.up_proj"
    out, inp = dict(model.named_modules())[up].weight.shape
    wide = (torch.zeros(out, 1), torch.zeros(1, inp + 1)) if kind == "lowrank" else None
    for path, value, match in (
        ("model.layers.9.mlp.up_proj", getattr(tuned, kind)[up], "no linear 'model.layers.9.mlp"),
        (up, wide or torch.zeros(out, inp + 1), f"is {out} x {inp + 1}, the linear"),
    ):
        wrong = copy.deepcopy(tuned)
        getattr(wrong, kind)[path] = value
        _assert_refused(model, wrong, match)


def test_bad_low_rank_corrections_and_headers_are_one_line(tmp_path: Path) -> None:
    tuned = {"gains": {"g": torch.ones(2)}, "tuning": {"x": 1}}
    with pytest.raises(SparseError, match="must have its tuned gains too"):
        SparsityState("teal", {}, {}, lowrank={"a": (torch.ones(2, 1), torch.ones(1, 3))})
    for pair, match in (
        (torch.ones(2, 3), "must be a pair"),
        ((torch.ones(2, 1), torch.ones(2, 3)), "must be float matrices U"),
        ((torch.ones(2), torch.ones(1, 3)), "must be float matrices U"),
        ((torch.ones(2, 1, dtype=torch.int64), torch.ones(1, 3)), "must be float matrices U"),
        ((torch.full((2, 1), float("inf")), torch.ones(1, 3)), "is not finite"),
    ):
        with pytest.raises(SparseError, match=match):
            SparsityState("teal", {}, {}, lowrank={"a": pair}, **tuned)  # type: ignore[arg-type]

    base = {"gain:model.norm.weight": torch.ones(4)}
    pair = {"lowrank_u:lin": torch.ones(8, 2), "lowrank_v:lin": torch.ones(2, 4)}
    with pytest.raises(SparseError, match="version 3.*1 low-rank corrections"):
        load_state(_write(tmp_path, 3, {**base, **pair}))
    with pytest.raises(SparseError, match="'lin' lacks one of its two factors"):
        load_state(_write(tmp_path, 4, {**base, "lowrank_u:lin": torch.ones(8, 2)}))
    with pytest.raises(SparseError, match="low-rank correction 'lin' is not float32"):
        bad = {**base, **pair, "lowrank_v:lin": torch.ones(2, 4).double()}
        load_state(_write(tmp_path, 4, bad))
    with pytest.raises(SparseError, match="reads 1 to 5"):
        load_state(_write(tmp_path, 6, {**base, **pair}))
    assert load_state(_write(tmp_path, 4, {**base, **pair})).lowrank["lin"][0].shape == (8, 2)


# ------------------------------------------------ WINA: the masks tuned through are deployed


def _assert_student_is_deployed(
    student: torch.nn.Module, dense: torch.nn.Module, tuned: SparsityState, ids: torch.Tensor
) -> None:
    """The tuned student's logits on ``ids`` are those of ``apply_state(dense, tuned)``."""
    from actlab.sparse._calls import forward_logits

    deployed = copy.deepcopy(dense)
    apply_state(deployed, tuned).set_mode("last-half")
    with torch.no_grad():
        got = forward_logits(student, ids, ids.shape[1]).logits
        want = deployed(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_pinned_norms_rank_like_the_merged_weight() -> None:
    """A WINA (top-k) site with a row scale and a low-rank correction attached: once the
    merged weight's norms are pinned, it computes what the site holding the merged weight
    ``diag(r) (W + U V)`` computes (its own norms: the deployed masks). Ranking by the raw
    weight's norms instead picks other inputs."""
    from actlab.sparse._topk import SparseTopKLinear
    from actlab.sparse._tune import _LowRank, _pin_merged_norms, _RowScale, _topk_factored

    g = torch.Generator().manual_seed(3)
    lin = SparseTopKLinear.wrap(torch.nn.Linear(16, 6, bias=True).double(), 0.5)
    low = _LowRank(lin, 2, g)
    scale = _RowScale(6, lin.weight)
    with torch.no_grad():
        low.u.copy_(torch.randn(6, 2, generator=g, dtype=torch.float64))
        scale.r.copy_(torch.linspace(0.2, 3.0, 6, dtype=torch.float64))
        lin.weight.mul_(torch.linspace(0.1, 4.0, 16, dtype=torch.float64))  # uneven columns
    low.attach(lin)
    scale.attach(lin)
    merged = torch.nn.Linear(16, 6, bias=True).double()
    with torch.no_grad():
        merged.weight.copy_((lin.weight + low.u @ low.v) * scale.r.unsqueeze(1))
        merged.bias.copy_(lin.bias)
    deployed = SparseTopKLinear.wrap(merged, 0.5)
    x = torch.randn(5, 16, generator=g, dtype=torch.float64)
    with torch.no_grad():
        want = deployed(x)
        unpinned = lin(x)
        _pin_merged_norms(
            _topk_factored({"p": lin}, {"p": scale}, {"p": low}), {"p": scale}, {"p": low}
        )
        got = lin(x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(unpinned, want, rtol=1e-3, atol=1e-3)
    lin.pin_norms(None)  # unpinned: its own weight's norms again
    torch.testing.assert_close(lin(x).detach(), unpinned)
    with pytest.raises(SparseError, match=r"shape \(16,\)"):
        lin.pin_norms(torch.ones(15))


@pytest.mark.parametrize("weights", [False, True])
def test_wina_tuned_through_the_deployed_masks(
    llama: torch.nn.Module, monkeypatch: pytest.MonkeyPatch, weights: bool
) -> None:
    """After tuning WINA with rows and low-rank corrections (and its weights), the tuned
    student (its factors as hooks, its trained weights, the merged weights' norms pinned) and
    the deployed model (factors and weight changes merged by ``apply``, each site ranking by
    its own weight) give the same logits."""
    import actlab.sparse._tune as tune

    seen: dict = {}
    real_pin, real_forward = tune._pin_merged_norms, tune.forward_logits

    def pin(*args: dict) -> None:
        seen["pin"] = args
        real_pin(*args)

    def forward(model: torch.nn.Module, ids: torch.Tensor, keep: int) -> object:
        if model is not llama:
            seen["student"] = model
        return real_forward(model, ids, keep)

    monkeypatch.setattr(tune, "_pin_merged_norms", pin)
    monkeypatch.setattr(tune, "forward_logits", forward)
    randomise_norms(llama)
    data = _windows()
    state = make_method("wina", sparsity=0.5).calibrate(llama, data)
    cfg = TuneConfig(steps=4, lr=5e-2, rows=True, rank=2, weights=weights, weights_lr=5e-3)
    tuned = tune_gains(llama, state, data, cfg)
    assert bool(tuned.deltas) is weights
    real_pin(*seen["pin"])  # the norms of the final factors (and weights)
    _assert_student_is_deployed(seen["student"], llama, tuned, torch.cat(data))


# ------------------------------------------------------- weight changes (weights=True)


def test_weight_changes_lower_the_kl_and_are_added_to_the_weights(tuned_setup: tuple) -> None:
    model, state, data = tuned_setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TuneConfig(steps=40, lr=1e-2, rows=True, weights=True, weights_lr=1e-3)
    tuned = tune_gains(model, state, data, cfg)
    for k, v in model.state_dict().items():  # the dense model is not changed
        assert torch.equal(v, before[k]), k
    assert set(tuned.deltas) == set(tuned.scales) == set(state.thresholds) and not tuned.lowrank
    for k, d in tuned.deltas.items():
        assert d.shape == before[f"{k}.weight"].shape and d.abs().max() > 0, k
    assert tuned.tuning["params"] == _n_tuned(tuned)
    assert (tuned.tuning["weights"], tuned.tuning["weights_lr"]) == (True, 1e-3)
    _assert_beats_rows_only(model, state, data, tuned)
    # apply: each weight is diag(r) (W + dW) of the dense weight (float64 oracle)
    sparse = copy.deepcopy(model)
    apply_state(sparse, tuned)
    params = dict(sparse.named_parameters())
    for k, d in tuned.deltas.items():
        want = (before[f"{k}.weight"].double() + d.double()) * tuned.scales[k].double()[:, None]
        torch.testing.assert_close(params[f"{k}.weight"].double(), want, rtol=1e-6, atol=1e-7)
    assert tune_gains(model, state, data, cfg) == tuned  # deterministic


def test_the_tuned_student_is_the_deployed_model(
    tuned_setup: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TEAL tuned with rows, a low-rank correction and its weights: the student's logits (the
    factors as hooks, the trained weights) are the logits of the model ``apply`` builds from
    the dense model and the state (``diag(r) (W + dW + U V)``)."""
    import actlab.sparse._tune as tune

    model, state, data = tuned_setup
    seen: dict = {}
    real_forward = tune.forward_logits

    def forward(m: torch.nn.Module, ids: torch.Tensor, keep: int) -> object:
        if m is not model:
            seen["student"] = m
        return real_forward(m, ids, keep)

    monkeypatch.setattr(tune, "forward_logits", forward)
    cfg = TuneConfig(steps=5, lr=1e-2, rows=True, rank=2, weights=True, weights_lr=1e-2)
    tuned = tune_gains(model, state, data, cfg)
    _assert_student_is_deployed(seen["student"], model, tuned, torch.cat(data))


def test_weight_changes_round_trip_as_version_5_and_are_applied_once(
    tuned_setup: tuple, tmp_path: Path
) -> None:
    from safetensors import safe_open

    from actlab.sparse._base import SCALES_KEY, scales_digest

    model, state, data = tuned_setup
    cfg = TuneConfig(steps=3, lr=1e-2, rows=True, rank=2, weights=True, weights_lr=1e-3)
    tuned = tune_gains(model, state, data, cfg)
    path = tuned.save(tmp_path / "deltas.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()[FORMAT_KEY])["version"] == 5
        assert {k for k in f.keys() if k.startswith("delta:")} == {  # noqa: SIM118
            f"delta:{k}" for k in tuned.deltas
        }
    back = load_state(path)
    assert back == tuned and back.version == 5
    without = copy.deepcopy(tuned)
    without.deltas = {}
    assert without != tuned and without.version == 4
    assert scales_digest(without) == scales_digest(  # no weight changes: the version-4 digest
        SparsityState(
            "teal",
            {},
            {},
            gains=tuned.gains,
            tuning=tuned.tuning,
            scales=tuned.scales,
            lowrank=tuned.lowrank,
        )  # fmt: skip
    )
    assert scales_digest(without) != scales_digest(tuned)
    a = copy.deepcopy(model)
    apply_state(a, tuned)
    b = copy.deepcopy(model)  # a copy of the tuned weights (a reloaded model): not again
    b.load_state_dict(a.state_dict())
    setattr(b.config, SCALES_KEY, scales_digest(tuned))
    apply_state(b, tuned)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), k
    c = copy.deepcopy(model)  # weights holding the same corrections without the changes
    setattr(c.config, SCALES_KEY, scales_digest(without))
    with pytest.raises(SparseError, match="already hold the row scales or low-rank"):
        apply_state(c, tuned)


def test_bad_weight_changes_and_headers_are_one_line(tmp_path: Path) -> None:
    tuned = {"gains": {"g": torch.ones(2)}, "tuning": {"x": 1}}
    with pytest.raises(SparseError, match="must have its tuned gains too"):
        SparsityState("teal", {}, {}, deltas={"a": torch.ones(2, 3)})
    for d, match in (
        (torch.ones(2), "must be a float matrix"),
        (torch.ones(2, 3, dtype=torch.int64), "must be a float matrix"),
        ("big", "must be a float matrix"),
        (torch.full((2, 3), float("nan")), "is not finite"),
    ):
        with pytest.raises(SparseError, match=match):
            SparsityState("teal", {}, {}, deltas={"a": d}, **tuned)  # type: ignore[arg-type]
    base = {"gain:model.norm.weight": torch.ones(4)}
    with pytest.raises(SparseError, match="version 4.*1 weight changes"):
        load_state(_write(tmp_path, 4, {**base, "delta:lin": torch.ones(8, 4)}))
    with pytest.raises(SparseError, match="weight change 'lin' is not a float32 matrix"):
        load_state(_write(tmp_path, 5, {**base, "delta:lin": torch.ones(8, 4).double()}))
    with pytest.raises(SparseError, match="weight change 'lin' is not a float32 matrix"):
        load_state(_write(tmp_path, 5, {**base, "delta:lin": torch.ones(8)}))
    assert load_state(_write(tmp_path, 5, {**base, "delta:lin": torch.ones(8, 4)})).version == 5


# ---------------------------------------------------------------- block features (hidden=λ)


def test_the_teacher_caches_the_dense_block_outputs(llama: torch.nn.Module) -> None:
    """The cached block outputs of the scored positions are the dense model's (Hugging Face's
    hidden states: entry l + 1 is block l's output, the last one after the final norm), in
    bfloat16; a cache over budget runs the model and gives the same in float32."""
    from actlab.sparse._sites import find_blocks
    from actlab.sparse._tune import _Teacher

    windows = _teacher_windows()
    paths = [b.path for b in find_blocks(llama)]
    index = torch.tensor([5, 0, 3])
    with torch.no_grad():
        states = llama(windows[index], output_hidden_states=True).hidden_states
    want = torch.stack(list(states[1:-1]), 1)[..., -10:, :]  # [3, L-1, 10, d]
    last = states[-1][:, -10:]  # norm(output of the last block)
    cached = _Teacher(llama, windows, 10, 4, torch.device("cpu"), blocks=paths)
    assert cached.blocks is not None and cached.blocks.dtype == torch.bfloat16
    assert cached.blocks.shape == (6, len(paths), 10, want.shape[-1])
    run = _Teacher(llama, windows, 10, 4, torch.device("cpu"), blocks=paths, block_bytes=1024)
    assert run.hidden is None and run.blocks is None
    for teacher, tol in ((cached, 1e-2), (run, 1e-5)):
        logits, blocks = teacher.targets(index, windows[index])
        assert blocks is not None and blocks.dtype == torch.float32
        torch.testing.assert_close(blocks[:, :-1], want, rtol=tol, atol=tol)
        norm = llama.get_submodule("model.norm")
        with torch.no_grad():
            torch.testing.assert_close(norm(blocks[:, -1]), last, rtol=tol, atol=tol)
            torch.testing.assert_close(logits, llama(windows[index]).logits[:, -10:])


def test_the_feature_loss_is_the_normalised_error_per_block() -> None:
    """Against a float64 sum written out block by block."""
    from actlab.sparse._tune import _feature_loss

    g = torch.Generator().manual_seed(3)
    dense = torch.randn(2, 3, 5, 4, generator=g)  # [b, L, keep, d]
    student = [torch.randn(2, 5, 4, generator=g) for _ in range(3)]
    want = 0.0
    for i in range(3):
        d, h = dense[:, i].double(), student[i].double()
        want += float(((h - d) ** 2).sum() / (d**2).sum()) / 3
    assert abs(float(_feature_loss(student, dense)) - want) < 1e-6
    exact = [dense[:, i].clone() for i in range(3)]
    assert float(_feature_loss(exact, dense)) == 0.0


def test_feature_distillation_lowers_the_block_error_and_is_recorded(tuned_setup: tuple) -> None:
    """With ``hidden`` the tuning records the weight and the feature term's first and last
    tenth (it falls); without it the tuning record keeps exactly its earlier keys."""
    model, state, data = tuned_setup
    plain = tune_gains(model, state, data, TuneConfig(steps=30, lr=1e-2, rows=True))
    assert "hidden" not in plain.tuning and "feature_last" not in plain.tuning
    cfg = TuneConfig(steps=30, lr=1e-2, rows=True, hidden=1.0)
    tuned = tune_gains(model, state, data, cfg)
    t = tuned.tuning
    assert t["hidden"] == 1.0 and t["feature_last"] < t["feature_first"]
    assert t["kl_last"] < t["kl_first"]
    assert tune_gains(model, state, data, cfg) == tuned  # deterministic
