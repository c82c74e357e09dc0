"""actlab.sparse core: argument checks, exact quantile, SparseLinear / SparseGatedMLP against
float64 brute force, block discovery, the state file, the registry."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

from actlab.sparse import (
    METHODS,
    SparseError,
    SparseGatedMLP,
    SparseLinear,
    SparsityState,
    check_sparsity,
    exact_quantile,
    find_blocks,
    load_state,
    make_method,
)

BAD_SPARSITY = [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.5", True, None, [0.5]]


@pytest.mark.parametrize("value", BAD_SPARSITY)
def test_bad_sparsity_is_a_one_line_error(value: object) -> None:
    with pytest.raises(SparseError) as e:
        check_sparsity(value)
    assert "\n" not in str(e.value) and "[0, 1)" in str(e.value)
    for name in ("teal", "cats"):
        with pytest.raises(SparseError, match=r"\[0, 1\)"):
            make_method(name, sparsity=value)


@pytest.mark.parametrize("value", [0, 0.0, 0.25, 0.999])
def test_good_sparsity(value: float) -> None:
    assert check_sparsity(value) == float(value)


@settings(derandomize=True, max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=60),
    st.floats(0.0, 1.0),
)
def test_exact_quantile_is_torch_quantile(values: list[float], q: float) -> None:
    x = torch.tensor(values, dtype=torch.float64)
    assert exact_quantile(x, q) == pytest.approx(float(torch.quantile(x, q)), rel=1e-12, abs=1e-12)


def test_exact_quantile_errors() -> None:
    with pytest.raises(SparseError, match="no values"):
        exact_quantile(torch.empty(0), 0.5)
    with pytest.raises(SparseError, match="quantile level"):
        exact_quantile(torch.ones(3), 1.5)


def _linear(bias: bool = True) -> nn.Linear:
    torch.manual_seed(3)
    return nn.Linear(16, 8, bias=bias)


@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_against_float64(bias: bool) -> None:
    lin = _linear(bias)
    x = torch.randn(5, 7, 16)
    t = float(torch.tensor(0.6, dtype=torch.float32))
    sl = SparseLinear.wrap(lin, t)
    assert sl.weight is lin.weight and sl.bias is lin.bias  # shared, not copied
    assert set(sl.state_dict()) == set(lin.state_dict())  # keys unchanged
    y = sl(x)
    x64 = x.double()
    mask = x64.abs() > t
    ref = (x64 * mask) @ lin.weight.double().T
    if bias:
        ref = ref + lin.bias.double()
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    assert sl.seen == x.numel()
    assert sl.zeroed == int((~mask).sum())
    assert sl.realised == pytest.approx(float((~mask).double().mean()))
    sl.reset_counts()
    assert sl.seen == 0 and math.isnan(sl.realised)


def test_sparse_linear_dense_is_bit_identical() -> None:
    lin = _linear()
    x = torch.randn(4, 16)
    sl = SparseLinear.wrap(lin)
    assert torch.equal(sl(x), lin(x))
    assert (sl.seen, sl.zeroed, sl.realised) == (x.numel(), 0, 0.0)  # dense: none zeroed


def test_sparse_linear_wrap_refuses() -> None:
    with pytest.raises(SparseError, match="already sparse"):
        SparseLinear.wrap(SparseLinear.wrap(_linear()))
    with pytest.raises(SparseError, match="Conv1d"):
        SparseLinear.wrap(nn.Conv1d(2, 2, 1))  # type: ignore[arg-type]


class _MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.gate_proj = nn.Linear(12, 20, bias=False)
        self.up_proj = nn.Linear(12, 20, bias=False)
        self.down_proj = nn.Linear(20, 12, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def test_sparse_gated_mlp_against_float64() -> None:
    mlp = _MLP()
    x = torch.randn(6, 12)
    t = 0.2
    smlp = SparseGatedMLP(mlp, t)
    assert set(smlp.state_dict()) == set(mlp.state_dict())
    y = smlp(x)
    x64 = x.double()
    g = x64 @ mlp.gate_proj.weight.double().T
    a = g * torch.sigmoid(g)
    keep = a.abs() > t
    u = x64 @ mlp.up_proj.weight.double().T
    # brute force: skip the zeroed channels in up and down (drop the columns/rows)
    for i in range(x.shape[0]):
        idx = keep[i].nonzero().flatten()
        h = a[i, idx] * u[i, idx]
        ref = mlp.down_proj.weight.double()[:, idx] @ h
        torch.testing.assert_close(y[i].double(), ref, rtol=1e-5, atol=1e-6)
    assert smlp.zeroed == int((~keep).sum()) and smlp.seen == keep.numel()
    dense = SparseGatedMLP(mlp)
    assert torch.equal(dense(x), mlp(x))


def test_sparse_gated_mlp_needs_a_gated_mlp() -> None:
    with pytest.raises(SparseError, match="no gate_proj"):
        SparseGatedMLP(nn.Sequential(nn.Linear(2, 2)))


def test_find_blocks(llama: nn.Module) -> None:
    blocks = find_blocks(llama)
    assert [b.path for b in blocks] == ["model.layers.0", "model.layers.1"]
    assert blocks[1].projections() == {
        "q_proj": "model.layers.1.self_attn.q_proj",
        "k_proj": "model.layers.1.self_attn.k_proj",
        "v_proj": "model.layers.1.self_attn.v_proj",
        "o_proj": "model.layers.1.self_attn.o_proj",
        "gate_proj": "model.layers.1.mlp.gate_proj",
        "up_proj": "model.layers.1.mlp.up_proj",
        "down_proj": "model.layers.1.mlp.down_proj",
    }
    with pytest.raises(SparseError, match="unknown projection"):
        blocks[0].proj("c_fc")


@pytest.mark.parametrize(
    "model", [nn.Sequential(nn.Linear(4, 4), nn.GELU()), nn.TransformerEncoderLayer(8, 2)]
)
def test_architecture_without_projections(model: nn.Module) -> None:
    with pytest.raises(SparseError) as e:
        find_blocks(model)
    msg = str(e.value)
    assert "\n" not in msg and "Llama-style blocks" in msg and type(model).__name__ in msg


def test_find_blocks_needs_a_module() -> None:
    with pytest.raises(SparseError, match="nn.Module"):
        find_blocks("gpt2")  # type: ignore[arg-type]


def test_state_round_trip(tmp_path) -> None:
    s = SparsityState(
        "teal",
        {"sparsity": 0.4, "allocation": "greedy"},
        {"a.q_proj": 0.1234567891, "a.k_proj": -1.0},
        {"a.q_proj": 0.4, "a.k_proj": 0.0},
    )
    assert s.thresholds["a.q_proj"] == float(torch.tensor(0.1234567891, dtype=torch.float32))
    p = s.save(tmp_path / "sub" / "s.safetensors")
    back = load_state(p)
    assert back == s
    assert SparsityState.load(p) == s
    assert "teal" in back.describe()
    assert not list(tmp_path.glob("**/*.tmp"))


def test_state_load_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no sparsity state"):
        load_state(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(SparseError, match="not a safetensors file"):
        load_state(junk)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(2)}, str(other))
    with pytest.raises(SparseError, match="not an actlab sparsity state"):
        load_state(other)
    bad = tmp_path / "bad.safetensors"
    save_file({"w": torch.ones(1)}, str(bad), metadata={"actlab.sparse": "{not json"})
    with pytest.raises(SparseError, match="malformed"):
        load_state(bad)
    mat = tmp_path / "mat.safetensors"
    hdr = '{"version": 1, "method": "teal", "params": {}, "targets": {}}'
    save_file({"w": torch.ones(2, 2)}, str(mat), metadata={"actlab.sparse": hdr})
    with pytest.raises(SparseError, match="float32 scalar or vector"):
        load_state(mat)
    save_file({"w": torch.ones(2, dtype=torch.float64)}, str(mat), metadata={"actlab.sparse": hdr})
    with pytest.raises(SparseError, match="float32 scalar or vector"):
        load_state(mat)
    with pytest.raises(SparseError, match="directory"):
        SparsityState("teal", {}, {}).save(tmp_path)


def test_state_rejects_nan_and_non_numbers() -> None:
    with pytest.raises(SparseError, match="NaN"):
        SparsityState("teal", {}, {"x": float("nan")})
    with pytest.raises(SparseError, match="numbers"):
        SparsityState("teal", {}, {"x": "0.5"})  # type: ignore[dict-item]


def test_registry() -> None:
    assert {"teal", "cats"} <= set(METHODS.names())
    assert METHODS.meta("teal")["paper"].startswith("arXiv")
    with pytest.raises(SparseError, match="Did you mean: teal"):
        METHODS.get("tael")
    with pytest.raises(SparseError, match="unexpected keyword"):
        make_method("teal", sparsity=0.5, window=10)


@pytest.mark.parametrize("mode", ["all", "decode", "last-half"])
def test_modes_sparsify_the_right_positions(mode: str) -> None:
    lin = _linear()
    x = torch.randn(2, 6, 16)
    t = 0.5
    sl = SparseLinear.wrap(lin, t)
    sl.mode = mode
    x64 = x.double()
    keep = x64.abs() > t
    if mode == "decode":
        keep[:] = True  # 6 positions: a prefill, dense
    if mode == "last-half":
        keep[:, :3] = True
    ref = (x64 * keep) @ lin.weight.double().T + lin.bias.double()
    torch.testing.assert_close(sl(x).double(), ref, rtol=1e-5, atol=1e-5)
    counted = {"all": 2 * 6 * 16, "decode": 0, "last-half": 2 * 3 * 16}[mode]
    assert sl.seen == counted
    one = x[:, :1]  # a single decode step: sparse in every mode
    sl.reset_counts()
    torch.testing.assert_close(
        sl(one).double(),
        (one.double() * (one.double().abs() > t)) @ lin.weight.double().T + lin.bias.double(),
    )
    assert sl.seen == one.numel()


def test_mode_checked() -> None:
    from actlab.sparse import SparsityReport

    report = SparsityReport("teal", {"l": SparseLinear.wrap(_linear(), 0.1)}, {"l": 0.5})
    report.set_mode("decode")
    assert report.modules["l"].mode == "decode"
    with pytest.raises(SparseError, match="mode must be one of all, decode, last-half"):
        report.set_mode("prefill")


def test_layer_replay_reproduces_the_blocks(llama: nn.Module, batches: list) -> None:
    """Replaying recorded calls block by block gives the model's own block outputs."""
    from actlab.sparse._replay import LayerReplay, record_block_calls

    blocks = find_blocks(llama)
    outs: list = []
    h = llama.get_submodule(blocks[1].path).register_forward_hook(
        lambda _m, _a, y: outs.append(y[0] if isinstance(y, tuple) else y)
    )
    calls_all = record_block_calls(llama, batches, blocks)
    h.remove()
    calls = record_block_calls(llama, batches, blocks, hidden="first")
    hidden = LayerReplay(llama, blocks[0]).run(calls[0])
    replay = LayerReplay(llama, blocks[1])
    for got, want in zip(replay.run(calls[1], hidden), outs):
        assert torch.equal(got, want)
    for got, want in zip(replay.run(calls_all[1]), outs):
        assert torch.equal(got, want)
    with pytest.raises(RuntimeError, match="without its hidden states"):
        replay.run(calls[1])


def test_channel_thresholds_in_the_gated_mlp() -> None:
    """A 1-D threshold: channel i of the gated activation is kept where |a_i| > t_i."""
    mlp = _MLP()
    x = torch.randn(9, 12)
    t = torch.linspace(-1.0, 0.6, 20)  # channels with t < 0 always kept
    smlp = SparseGatedMLP(mlp, t)
    x64 = x.double()
    g = x64 @ mlp.gate_proj.weight.double().T
    a = g * torch.sigmoid(g)
    keep = a.abs() > t.double()
    ref = ((a * keep) * (x64 @ mlp.up_proj.weight.double().T)) @ mlp.down_proj.weight.double().T
    torch.testing.assert_close(smlp(x).double(), ref, rtol=1e-5, atol=1e-6)
    assert smlp.zeroed == int((~keep).sum())
    assert "20 channels" in repr(smlp)
    bad = SparseGatedMLP(mlp, torch.zeros(7))
    with pytest.raises(SparseError, match="7 channel thresholds for 20 channels"):
        bad(x)
    with pytest.raises(SparseError, match="1-D float"):
        SparseGatedMLP(mlp, torch.zeros(2, 10))


def test_state_with_channel_thresholds(tmp_path) -> None:
    vec = torch.tensor([0.1, -1.0, 0.3], dtype=torch.float64)
    s = SparsityState("chess", {"sparsity": 0.5}, {"m": vec, "q": 0.2}, {"m": 0.5, "q": 0.5})
    assert s.thresholds["m"].dtype == torch.float32
    back = load_state(s.save(tmp_path / "c.safetensors"))
    assert back == s and torch.equal(back.thresholds["m"], vec.float())
    assert back != SparsityState("chess", {"sparsity": 0.5}, {"m": 0.1, "q": 0.2}, back.targets)
    with pytest.raises(SparseError, match="NaN"):
        SparsityState("chess", {}, {"m": torch.tensor([0.1, float("nan")])})
    with pytest.raises(SparseError, match="floats"):
        SparsityState("chess", {}, {"m": torch.tensor([1, 2])})
    with pytest.raises(SparseError, match="scalars or 1-D"):
        SparsityState("chess", {}, {"m": torch.zeros(2, 2)})
