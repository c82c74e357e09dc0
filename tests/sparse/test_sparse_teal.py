"""TEAL on a tiny random Llama (GQA): thresholds against a full-model float64 brute force,
realised sparsity, the greedy allocation, sparsity 0, save/load, generate, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from sparse_helpers import captured_inputs, logits, partial, quantile64, tiny_llama
from torch import nn

from actlab.sparse import (
    INPUT_OF,
    PROJECTIONS,
    SparseError,
    SparseLinear,
    SparsityState,
    apply_state,
    find_blocks,
    load_state,
    make_method,
)
from actlab.sparse._methods.teal import _split_first, block_weights, greedy_allocation

GROUPS = ("attn_in", "o_in", "mlp_in", "down_in")
READ = {"attn_in": "q_proj", "o_in": "o_proj", "mlp_in": "gate_proj", "down_in": "down_proj"}


def brute_force_teal(
    dense: nn.Module, batches: list[torch.Tensor], targets: dict[str, float], sequential: bool
) -> dict[str, float]:
    """TEAL thresholds for given per-site targets by full forwards; sequential: each input is
    read with every site before it already sparsified."""
    params = {"sparsity": 0.5}
    done: dict[str, float] = {}
    for block in find_blocks(dense):
        proj = block.projections()
        for g in GROUPS:
            names = [n for n in PROJECTIONS if INPUT_OF[n] == g]
            model = partial(dense, "teal", params, done) if sequential else dense
            x = captured_inputs(model, batches, proj[names[0]])
            for n in names:
                s = targets[proj[n]]
                done[proj[n]] = quantile64(x, s) if s > 0 else -1.0
    return done


@pytest.mark.parametrize("calibration", ["sequential", "dense"])
@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.8])
def test_uniform_thresholds_match_brute_force(
    llama: nn.Module, batches: list[torch.Tensor], sparsity: float, calibration: str
) -> None:
    state = make_method("teal", sparsity=sparsity, calibration=calibration).calibrate(
        llama, batches
    )
    targets = dict.fromkeys(state.thresholds, sparsity)
    ref = brute_force_teal(llama, batches, targets, calibration == "sequential")
    assert set(state.thresholds) == set(ref)
    for path, t in ref.items():
        assert state.thresholds[path] == pytest.approx(t, rel=1e-5, abs=1e-7), path
        assert state.targets[path] == sparsity


def _realised(model: nn.Module, batches: list[torch.Tensor], state: SparsityState) -> dict:
    report = apply_state(model, state)
    report.reset_counts()
    logits(model, batches)
    return report.realised()


@pytest.mark.parametrize("allocation", ["uniform", "greedy"])
@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.65])
def test_realised_sparsity_on_calibration_data(
    llama: nn.Module, batches: list[torch.Tensor], sparsity: float, allocation: str
) -> None:
    method = make_method("teal", sparsity=sparsity, allocation=allocation, step=0.1)
    state = method.calibrate(llama, batches)
    realised = _realised(llama, batches, state)
    assert set(realised) == set(state.targets)
    for path, r in realised.items():
        assert abs(r - state.targets[path]) <= 0.01, (path, r, state.targets[path])


def test_dense_calibration_first_input_only_is_exact(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    """The authors' dense calibration: exact at the first site; later sites drift."""
    state = make_method("teal", sparsity=0.5, calibration="dense").calibrate(llama, batches)
    realised = _realised(llama, batches, state)
    assert abs(realised["model.layers.0.self_attn.q_proj"] - 0.5) <= 0.01


def test_block_weights_are_parameter_ratios(llama: nn.Module) -> None:
    w = block_weights(llama.config)
    assert w["k_proj"] == w["v_proj"] == 0.5  # 2 kv heads / 4 heads
    assert w["gate_proj"] == 2.0  # d_ff / d = 128 / 64
    block = find_blocks(llama)[0]
    q = llama.get_submodule(block.proj("q_proj")).weight.numel()
    for n, path in block.projections().items():
        assert w[n] == llama.get_submodule(path).weight.numel() / q


def test_block_weights_head_dim_not_hidden() -> None:
    """Gemma-3 style: n_heads * head_dim != hidden; weights still count parameters."""
    cfg = type("C", (), {})()
    cfg.num_attention_heads, cfg.num_key_value_heads = 4, 1
    cfg.hidden_size, cfg.intermediate_size, cfg.head_dim = 640, 2048, 256
    w = block_weights(cfg)
    assert w["k_proj"] == 0.25
    assert w["down_proj"] == pytest.approx(640 * 2048 / (640 * 4 * 256))
    with pytest.raises(SparseError, match="config"):
        block_weights(None)


@pytest.mark.parametrize("target", [0.0, 0.1, 0.37, 0.5, 0.9, 0.995])
def test_greedy_allocation_hits_the_weighted_target(target: float) -> None:
    weights = {"q": 1.0, "k": 0.25, "v": 0.25, "o": 1.0, "g": 3.0, "u": 3.0, "d": 3.0}
    cost = {"q": 1.0, "k": 5.0, "v": 0.5, "o": 2.0, "g": 1.5, "u": 0.7, "d": 3.0}

    def error(s: dict[str, float]) -> float:
        return sum(cost[p] * s[p] ** 2 for p in s)

    s = greedy_allocation(target, weights, error)
    total = sum(weights.values())
    assert sum(weights[p] * s[p] for p in s) / total == pytest.approx(target, abs=1e-9)
    assert all(0.0 <= v <= max(0.99, target) + 1e-12 for v in s.values())


def test_greedy_allocation_prefers_the_cheap_projection() -> None:
    weights = {"a": 1.0, "b": 1.0}
    s = greedy_allocation(0.25, weights, lambda s: 10 * s["a"] + s["b"], step=0.05)
    assert s == {"a": 0.0, "b": pytest.approx(0.5)}


@pytest.mark.parametrize("sparsity", [0.3, 0.5])
def test_greedy_block_sparsity_equals_target(
    llama: nn.Module, batches: list[torch.Tensor], sparsity: float
) -> None:
    state = make_method("teal", sparsity=sparsity, allocation="greedy", step=0.1).calibrate(
        llama, batches
    )
    w = block_weights(llama.config)
    for block in find_blocks(llama):
        proj = block.projections()
        weighted = sum(w[n] * state.targets[p] for n, p in proj.items()) / sum(w.values())
        assert weighted == pytest.approx(sparsity, abs=1e-9)
    assert len(set(state.targets.values())) > 1  # not uniform
    # q, k, v (and gate, up) share an input but get their own targets: each threshold is the
    # quantile of the shared input at the projection's own target
    ref = brute_force_teal(llama, batches, state.targets, sequential=True)
    for path, t in ref.items():
        assert state.thresholds[path] == pytest.approx(t, rel=1e-5, abs=1e-7), path


@pytest.mark.parametrize("prefill", [0.0, 0.5])
def test_greedy_first_block_matches_a_brute_force_search(
    llama: nn.Module, batches: list[torch.Tensor], prefill: float
) -> None:
    """Block 0's greedy allocation equals TEAL's greedy run on an independent scorer: the
    full model with block 0's thresholds (dense quantiles of its inputs), block 0's output
    against the dense one, squared error at the positions after the prefill only."""
    model = copy.deepcopy(llama).double()
    method = make_method("teal", sparsity=0.5, allocation="greedy", step=0.1, prefill=prefill)
    state = method.calibrate(model, batches)
    block = find_blocks(model)[0]
    proj = block.projections()
    x = {g: captured_inputs(model, batches, proj[READ[g]]) for g in GROUPS}  # dense inputs
    dense_out = captured_inputs(model, batches, block.path, output=True)

    def outputs(m: nn.Module) -> torch.Tensor:
        return captured_inputs(m, batches, block.path, output=True)

    def error(alloc: dict[str, float]) -> float:
        th = {proj[n]: quantile64(x[INPUT_OF[n]], s) for n, s in alloc.items() if s > 0}
        y = outputs(partial(model, "teal", {"sparsity": 0.5}, th))
        err = 0.0
        T = batches[0].shape[1]
        p = int(prefill * T)
        for i, _ in enumerate(batches):  # one mean per batch, as the method sums them
            rows = slice(i * batches[i].numel(), (i + 1) * batches[i].numel())
            d = (y[rows] - dense_out[rows]).reshape(batches[i].shape[0], T, -1)[:, p:]
            err += float(d.pow(2).mean())
        return err

    want = greedy_allocation(0.5, block_weights(model.config), error, step=0.1)
    for n, path in proj.items():
        assert state.targets[path] == pytest.approx(want[n], abs=1e-9), (n, prefill)


def test_split_first_cuts_the_rows_the_greedy_scores() -> None:
    ids = torch.arange(8 * 10).reshape(8, 10)
    more = torch.ones(3, 10, dtype=torch.long)
    out = _split_first([ids, more], 25)  # 3 rows of 10 hold >= 25 tokens
    assert [b.shape[0] for b in out] == [3, 5, 3]
    assert torch.equal(torch.cat(out[:2]), ids)
    assert _split_first([ids], 80) == [ids]  # the whole batch is needed: unchanged
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "note": "x"}
    a, b = _split_first([batch], 1)
    assert isinstance(a, dict) and isinstance(b, dict)
    assert a["input_ids"].shape == (1, 10) and b["attention_mask"].shape == (7, 10)
    assert a["note"] == b["note"] == "x"


def test_greedy_scores_on_greedy_tokens_only(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    """Scoring on the first batch only still lands on the target; thresholds use every token."""
    few = make_method("teal", sparsity=0.5, allocation="greedy", step=0.1, greedy_tokens=1)
    state = few.calibrate(llama, batches)
    w = block_weights(llama.config)
    for block in find_blocks(llama):
        proj = block.projections()
        weighted = sum(w[n] * state.targets[p] for n, p in proj.items()) / sum(w.values())
        assert weighted == pytest.approx(0.5, abs=1e-9)
    ref = brute_force_teal(llama, batches, state.targets, sequential=True)
    for path, t in ref.items():
        assert state.thresholds[path] == pytest.approx(t, rel=1e-5, abs=1e-7), path
    with pytest.raises(SparseError, match="greedy_tokens"):
        make_method("teal", sparsity=0.5, greedy_tokens=0)


@pytest.mark.parametrize("allocation", ["uniform", "greedy"])
def test_sparsity_zero_is_bit_identical(
    llama: nn.Module, batches: list[torch.Tensor], allocation: str
) -> None:
    dense = copy.deepcopy(llama)
    method = make_method("teal", sparsity=0.0, allocation=allocation)
    state = method.calibrate(llama, batches)
    report = method.apply(llama, state)
    assert len(report.modules) == 14 and all(t == -1.0 for t in report.thresholds.values())
    for a, b in zip(logits(llama, batches), logits(dense, batches)):
        assert torch.equal(a, b)
    prompt = batches[0][:1, :6]
    assert torch.equal(
        llama.generate(prompt, max_new_tokens=5, do_sample=False),
        dense.generate(prompt, max_new_tokens=5, do_sample=False),
    )


def test_save_load_round_trip(llama: nn.Module, batches: list[torch.Tensor], tmp_path) -> None:
    fresh = copy.deepcopy(llama)
    method = make_method("teal", sparsity=0.5, allocation="greedy", step=0.2)
    state = method.calibrate(llama, batches)
    method.apply(llama, state)
    path = state.save(tmp_path / "teal.safetensors")
    loaded = load_state(path)
    assert loaded.method == "teal" and loaded.params == state.params
    report = apply_state(fresh, loaded)
    assert report.thresholds == state.thresholds
    for a, b in zip(logits(llama, batches), logits(fresh, batches)):
        assert torch.equal(a, b)


def test_apply_keeps_state_dict_keys_and_generate_works(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    keys = set(llama.state_dict())
    method = make_method("teal", sparsity=0.5)
    report = method.apply(llama, method.calibrate(llama, batches))
    assert set(llama.state_dict()) == keys
    assert (
        llama.lm_head.weight is llama.model.embed_tokens.weight
        or not llama.config.tie_word_embeddings
    )
    assert all(isinstance(m, SparseLinear) for m in report.modules.values())
    out = llama.generate(batches[0][:1, :6], max_new_tokens=6, do_sample=False)
    assert out.shape == (1, 12) and int(out.max()) < llama.config.vocab_size
    assert "realised" in report.table().splitlines()[0]
    assert 0.4 < report.realised_total() < 0.6  # decode-time tokens differ from calibration


def test_more_layers_and_dict_batches(batches: list[torch.Tensor]) -> None:
    model = tiny_llama(layers=4, seed=5)
    dict_batches = [{"input_ids": b, "attention_mask": torch.ones_like(b)} for b in batches]
    state = make_method("teal", sparsity=0.4).calibrate(model, dict_batches)
    assert len(state.thresholds) == 4 * 7
    realised = _realised(model, batches, state)
    assert all(abs(r - 0.4) <= 0.01 for r in realised.values())


# ----------------------------------------------------------------------------- bad input
def test_bad_arguments_are_one_line_errors(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    cases = [
        (lambda: make_method("teal", sparsity=0.5, allocation="global"), "allocation"),
        (lambda: make_method("teal", sparsity=0.5, calibration="hist"), "calibration"),
        (lambda: make_method("teal", sparsity=0.5, step=0), "step"),
        (lambda: make_method("teal", sparsity=0.5, min_tokens=0), "min_tokens"),
        (lambda: make_method("teal", sparsity=0.5).calibrate(llama, "some text"), "tokenize"),
        (lambda: make_method("teal", sparsity=0.5).calibrate(llama, []), "too short"),
        (
            lambda: make_method("teal", sparsity=0.5).calibrate(llama, [batches[0][:1, :8]]),
            "too short: 8 tokens, need at least 64",
        ),
        (
            lambda: make_method("teal", sparsity=0.5).calibrate(llama, [torch.randn(2, 8)]),
            "LongTensor",
        ),
        (
            lambda: make_method("teal", sparsity=0.5).calibrate(
                llama, [torch.zeros(2, 2, 40, dtype=torch.long)]
            ),
            "batch, seq",
        ),
        (
            lambda: make_method("teal", sparsity=0.5).calibrate(nn.Linear(2, 2), batches),
            "Llama-style",
        ),
        (
            lambda: make_method("teal", sparsity=0.5).calibrate(llama, [batches[0] + 100]),
            "outside [0, 97)",
        ),
        (
            lambda: make_method("teal", sparsity=0.5).calibrate(llama, [batches[0] - 50]),
            "outside [0, 97)",
        ),
        (
            lambda: make_method("teal", sparsity=0.5).calibrate(
                llama, [torch.zeros(0, 40, dtype=torch.long), *batches]
            ),
            "batch 0 is empty",
        ),
    ]
    for fn, text in cases:
        with pytest.raises(SparseError) as e:
            fn()
        assert text in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_apply_twice_and_foreign_state(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    method = make_method("teal", sparsity=0.5)
    state = method.calibrate(llama, batches)
    method.apply(llama, state)
    with pytest.raises(SparseError, match="already sparsified"):
        method.apply(llama, state)
    small = tiny_llama(layers=1)
    before = [type(m) for m in small.modules()]
    with pytest.raises(SparseError, match="no module 'model.layers.1"):
        apply_state(small, state)
    assert [type(m) for m in small.modules()] == before  # nothing installed
    with pytest.raises(SparseError, match="SparsityState"):
        apply_state(small, {"method": "teal"})  # type: ignore[arg-type]


def test_protocol_modes(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    """decode: prefill logits are the dense ones, decode steps are sparse; last-half: the
    first half of the positions is dense (causal), the second half is not."""
    dense = copy.deepcopy(llama)
    method = make_method("teal", sparsity=0.5)
    report = method.apply(llama, method.calibrate(llama, batches))
    ref = logits(dense, batches)
    report.set_mode("decode")
    report.reset_counts()
    for a, b in zip(logits(llama, batches), ref):
        assert torch.equal(a, b)
    assert report.realised_total() != report.realised_total()  # nan: nothing sparsified
    llama.generate(batches[0][:1, :6], max_new_tokens=4, do_sample=False)
    assert all(m.seen > 0 for m in report.modules.values())  # decode steps were sparse
    report.set_mode("last-half")
    for a, b in zip(logits(llama, batches), ref):
        half = a.shape[1] // 2
        torch.testing.assert_close(a[:, :half], b[:, :half], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(a[:, half:], b[:, half:])
