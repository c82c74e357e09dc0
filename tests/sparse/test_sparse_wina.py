"""WINA on a tiny random Llama: per-token top-k of |x_i| * ||W[:, i]||_2 against a float64
brute force (masks, outputs, logits), realised sparsity by construction, sparsity 0,
per-projection targets, save/load, generate, the decode protocol, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from sparse_helpers import logits, tiny_llama
from torch import nn

from actlab.sparse import (
    PROJECTIONS,
    SparseError,
    SparseLinear,
    SparseTopKLinear,
    SparsityState,
    apply_state,
    find_blocks,
    load_state,
    make_method,
)


def brute_keep(x: torch.Tensor, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """float64: per row of ``x``, keep all but the round(s*d) entries of smallest
    |x_i| * ||W[:, i]||_2 (via a full descending sort, not topk)."""
    x = x.double().reshape(-1, x.shape[-1])
    d = x.shape[-1]
    zero = round(sparsity * d)
    norms = weight.double().pow(2).sum(dim=0).sqrt()
    order = torch.argsort(x.abs() * norms, dim=-1, descending=True)
    keep = torch.zeros_like(x, dtype=torch.bool)
    for r in range(x.shape[0]):
        keep[r, order[r, : d - zero]] = True
    return keep


def wina(model: nn.Module, batches: list[torch.Tensor], sparsity: float, **kw):
    method = make_method("wina", sparsity=sparsity, **kw)
    state = method.calibrate(model, batches)
    return state, method.apply(model, state)


def test_state_holds_fractions(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    state, report = wina(llama, batches, 0.4, projections={"o_proj": 0.0, "down_proj": 0.25})
    assert len(state.thresholds) == 2 * 7
    for block in find_blocks(llama):
        for n, path in block.projections().items():
            want = {"o_proj": 0.0, "down_proj": 0.25}.get(n, 0.4)
            assert state.targets[path] == want
            # the stored value is the fraction (float32); 0 is stored as "dense" (-1)
            assert state.thresholds[path] == (-1.0 if want == 0 else pytest.approx(want))
            assert type(llama.get_submodule(path)) is SparseTopKLinear
    assert set(report.modules) == set(state.thresholds)


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.8])
def test_masks_and_outputs_match_brute_force(
    llama: nn.Module, batches: list[torch.Tensor], sparsity: float
) -> None:
    """Every site: the mask it applies equals the float64 brute force on the input it sees,
    and its output equals W (x * mask) + b computed in float64."""
    _, report = wina(llama, batches, sparsity)
    seen: list[tuple[SparseTopKLinear, torch.Tensor, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda m, a, y: seen.append((m, a[0].detach(), y.detach())))
        for m in report.modules.values()
    ]
    try:
        logits(llama, batches)
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == 2 * 7 * len(batches)
    for m, x, y in seen:
        ref = brute_keep(x, m.weight, sparsity)
        m.counting = False
        got = m._keep(x)
        m.counting = True
        assert got is not None
        assert torch.equal(got.reshape(ref.shape), ref)
        x64 = x.double().reshape(ref.shape) * ref
        b = 0 if m.bias is None else m.bias.double()
        y64 = x64 @ m.weight.double().T + b
        assert torch.allclose(y.double().reshape(y64.shape), y64, rtol=1e-4, atol=1e-5)


def test_logits_match_float64_model_with_hooks(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    """An independent float64 model whose projections mask their inputs by the brute force
    (pre-hooks) gives the same logits as the float32 WINA model."""
    ref = copy.deepcopy(llama).double()
    hooks = []
    for block in find_blocks(ref):
        for path in block.projections().values():
            lin = ref.get_submodule(path)

            def pre(m: nn.Module, a: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
                x = a[0]
                return (x * brute_keep(x, m.weight, 0.5).reshape(x.shape),)

            hooks.append(lin.register_forward_pre_hook(pre))
    wina(llama, batches, 0.5)
    for a, b in zip(logits(llama, batches), logits(ref, batches)):
        assert torch.allclose(a.double(), b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sparsity", [0.25, 0.4, 0.5, 0.65, 0.8])
def test_realised_equals_target_by_construction(
    llama: nn.Module, batches: list[torch.Tensor], sparsity: float
) -> None:
    """Exactly round(s * d) entries per token, on the calibration text and on other text."""
    _, report = wina(llama, batches, sparsity)
    other = [torch.randint(3, 97, (3, 17), generator=torch.Generator().manual_seed(7))]
    for data in (batches, other):
        report.reset_counts()
        logits(llama, data)
        for path, r in report.realised().items():
            m = report.modules[path]
            assert r == round(sparsity * m.in_features) / m.in_features, path
            assert abs(r - sparsity) <= 0.01, (path, r)


def test_sparsity_zero_and_dense_sites_bit_identical(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    dense = copy.deepcopy(llama)
    wina(llama, batches, 0.0)
    assert all(type(llama.get_submodule(p)) is SparseTopKLinear for p in _paths(llama))
    for a, b in zip(logits(llama, batches), logits(dense, batches)):
        assert torch.equal(a, b)
    # a projection at 0 leaves its output bit-identical inside a sparsified model
    model = copy.deepcopy(dense)
    override = dict.fromkeys(PROJECTIONS, 0.0)
    override["q_proj"] = 0.5
    _, report = wina(model, batches, 0.0, projections=override)
    report.reset_counts()
    logits(model, batches)
    for path, r in report.realised().items():
        assert r == (0.5 if path.endswith("q_proj") else 0.0), path


def _paths(model: nn.Module) -> list[str]:
    return [p for b in find_blocks(model) for p in b.projections().values()]


def test_own_column_norms_not_magnitude() -> None:
    """The score uses the projection's own column norms: a small entry on a heavy column is
    kept, a large entry on a near-zero column is dropped."""
    lin = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[100.0, 0.001, 1.0, 1.0]] * 3))
    m = SparseTopKLinear.wrap(lin, 0.5)
    x = torch.tensor([[0.1, 5.0, 1.0, 2.0]])
    # scores: 0.1*173, 5*0.0017, 1*1.73, 2*1.73 -> keep entries 0 and 3
    assert m._keep(x).tolist() == [[True, False, False, True]]
    # the norms follow an in-place change of the weight
    with torch.no_grad():
        lin.weight[:, 0] = 0.0
    assert m._keep(x).tolist() == [[False, False, True, True]]
    # q, k and v read the same input but rank it with their own weights
    lin2 = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        lin2.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1000.0]] * 3))
    assert SparseTopKLinear.wrap(lin2, 0.75)._keep(x).tolist() == [[False, False, False, True]]


def test_save_load_generate_and_decode_protocol(
    llama: nn.Module, batches: list[torch.Tensor], tmp_path
) -> None:
    dense = copy.deepcopy(llama)
    state, report = wina(llama, batches, 0.5, projections={"k_proj": 0.25})
    loaded = load_state(state.save(tmp_path / "wina.safetensors"))
    assert loaded == state and loaded.params["projections"] == {"k_proj": 0.25}
    fresh = copy.deepcopy(dense)
    rep2 = apply_state(fresh, loaded)
    for a, b in zip(logits(llama, batches), logits(fresh, batches)):
        assert torch.equal(a, b)
    # decode protocol: a multi-token prefill stays dense, single-token steps are sparse
    rep2.set_mode("decode")
    rep2.reset_counts()
    for a, b in zip(logits(fresh, batches), logits(dense, batches)):
        assert torch.equal(a, b)
    assert all(m.seen == 0 for m in rep2.modules.values())  # dense forwards are not counted
    out = fresh.generate(batches[0][:1, :6], max_new_tokens=5, do_sample=False)
    assert 7 <= out.shape[1] <= 11
    q = rep2.modules["model.layers.0.self_attn.q_proj"]
    steps = out.shape[1] - 7  # single-token steps after the dense prefill
    assert q.seen == 64 * steps and q.zeroed == 32 * steps
    # last-half: the first half of the positions of a multi-token forward stays dense
    report.set_mode("last-half")
    report.reset_counts()
    logits(llama, batches)
    assert all(r == 0.5 or r == 0.25 for r in report.realised().values())


def test_bad_input_one_line_errors(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    bad_params = [
        {"projections": {"lm_head": 0.5}},
        {"projections": {"q_proj": 1.0}},
        {"projections": {"q_proj": "half"}},
        {"projections": [("q_proj", 0.5)]},
        {"min_tokens": 0},
        {"topk": 3},
    ]
    for kw in bad_params:
        with pytest.raises(SparseError) as e:
            make_method("wina", sparsity=0.5, **kw)
        assert "\n" not in str(e.value), kw
    with pytest.raises(SparseError, match="too short"):
        make_method("wina", sparsity=0.5).calibrate(llama, [batches[0][:1, :8]])
    paths = _paths(llama)
    for t in (torch.ones(64), 1.5):
        state = SparsityState("wina", {"sparsity": 0.5}, {paths[0]: t})
        with pytest.raises(SparseError) as e:
            apply_state(copy.deepcopy(llama), state)
        assert "\n" not in str(e.value)
    with pytest.raises(SparseError, match="below 1"):
        SparseTopKLinear.wrap(nn.Linear(4, 4), 1.0)
    state, _ = wina(llama, batches, 0.5)
    with pytest.raises(SparseError, match="already sparsified"):
        apply_state(llama, state)
    assert isinstance(llama.get_submodule(paths[0]), SparseLinear)


def test_wider_input() -> None:
    """down_proj reads d_ff = 128 entries: round(0.65 * 128) = 83 zeroed per token."""
    model = tiny_llama(1, seed=3)
    data = [torch.randint(3, 97, (2, 40), generator=torch.Generator().manual_seed(2))]
    _, report = wina(model, data, 0.65)
    report.reset_counts()
    logits(model, data)
    down = report.modules["model.layers.0.mlp.down_proj"]
    assert down.in_features == 128 and down.zero_count == 83
    assert down.realised == 83 / 128
