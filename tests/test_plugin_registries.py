"""The per-registry test matrices: registering a task, a probe, a strategy or a model preset
opts it in (activations and layers have theirs in tests/activations and tests/layers).

- every task builds its config, its loaders and its default model on a tiny configuration
  (skipped, with the reason, where its data is user-supplied or not installed here), and
  the model's output has the shape the task's metric needs;
- every probe attaches to a tiny model holding every kind of site (activations, blocks,
  attention probabilities, a router), runs update on a few batches and summarises them;
- every strategy is built by name and runs ask/tell a few times on a toy objective
  (curve matching, no training), each told result being the objective's own score;
- every model preset builds, runs forward and backward on a tiny batch, finite throughout.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from actlab.data import DatasetNotFoundError
from actlab.expr import parse
from actlab.models.factory import MODELS, build_model, get_model_preset
from actlab.probes import PROBES, Probe, make_probe, probe
from actlab.search import (
    STRATEGIES,
    Candidate,
    CurveObjective,
    EvalResult,
    Rejected,
    Strategy,
    make_strategy,
)
from actlab.train import TASKS, TrainConfig, get_task

FORM = "x*sigmoid(1.702*x)"  # for strategies that optimise the constants of a formula


# ---------------------------------------------------------------------------- tasks
@pytest.mark.parametrize("name", TASKS.names())
def test_task_builds_config_loaders_and_model(name: str) -> None:
    task = get_task(name)
    meta = TASKS.meta(name)
    assert task.name == name and meta["kind"] == task.kind in ("image", "text", "regression")
    assert task.metric == {"image": "accuracy", "text": "bpc", "regression": "rmse"}[task.kind]
    assert task.default_model in task.models and task.description.strip()
    cfg = task.config(batch_size=4, eval_batch_size=4, steps_per_epoch=2, eval_windows=4)
    assert isinstance(cfg, TrainConfig) and cfg.batch_size == 4
    assert task.resolve_model(None) == task.default_model
    if meta.get("user_data"):
        pytest.skip(f"{name}: the user brings its data files; none are available offline here")
    block = 16 if task.kind == "text" else None
    try:
        data = task.loaders(cfg, seed=0, block_size=block)
    except DatasetNotFoundError as e:
        pytest.skip(f"{name}: its dataset is not installed here ({str(e).splitlines()[0]})")
    torch.manual_seed(0)
    model = task.build_model(None, "relu", data)
    x, y = next(iter(data.train))
    with torch.no_grad():
        out = model(x)
    assert torch.isfinite(out).all()
    if task.kind == "image":
        assert (
            out.shape == (x.shape[0], data.model_kwargs["num_classes"]) and y.shape == x.shape[:1]
        )
    elif task.kind == "regression":
        assert out.shape == y.shape == (x.shape[0], data.model_kwargs["out_features"])
    else:
        assert out.shape == (*x.shape, data.model_kwargs["vocab_size"]) and y.shape == x.shape
        assert x.shape[1] == block


# --------------------------------------------------------------------------- probes
class _Block(nn.Module):
    """Attention probabilities through nn.Softmax, a router (``gate``), an MLP with GELU."""

    def __init__(self, d: int = 16, heads: int = 2, experts: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qk = nn.Linear(d, 2 * d)
        self.softmax = nn.Softmax(dim=-1)
        self.gate = nn.Linear(d, experts)
        self.fc1, self.act, self.fc2 = nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k = self.qk(x).view(b, t, 2, self.heads, d // self.heads).unbind(2)
        a = self.softmax(torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(d // self.heads))
        v = x.view(b, t, self.heads, d // self.heads)
        x = x + torch.einsum("bhts,bshd->bthd", a, v).reshape(b, t, d)
        w = self.gate(x).softmax(-1)  # expert weights scale the MLP: the router is used
        return x + self.fc2(self.act(self.fc1(x))) * w.max(-1, keepdim=True).values


class _Tiny(nn.Module):
    def __init__(self, d: int = 16, depth: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_Block(d) for _ in range(depth))
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.head(x.mean(1))


@pytest.mark.parametrize("name", PROBES.names())
def test_probe_updates_and_summarises_on_a_tiny_model(name: str) -> None:
    meta = PROBES.meta(name)
    assert isinstance(meta.get("description"), str) and meta["description"].strip()
    assert "\n" not in meta["description"]
    p = make_probe(name)
    assert isinstance(p, Probe) and p.name == name
    torch.manual_seed(0)
    net = _Tiny()
    assert net(torch.randn(6, 8, 16)).shape == (6, 3)  # the model runs without probes
    with probe(net, probes=[name], sample=64, seed=0) as mgr:
        assert mgr.sites[name], f"probe {name!r} found no site on a model with every kind"
        for i in range(3):
            g = torch.Generator().manual_seed(i)
            mgr.set_context(labels=torch.arange(6) % 3,
                            input_ids=torch.randint(0, 5, (6, 8), generator=g))  # fmt: skip
            net(torch.randn(6, 8, 16, generator=g))
    rows = mgr.summary().rows
    assert rows, f"probe {name!r} summarised nothing"
    assert {r["probe"] for r in rows} == {name}
    assert {r["layer"] for r in rows} <= set(mgr.sites[name])


# ----------------------------------------------------------------------- strategies
def _evaluate(objective: CurveObjective, c: Candidate) -> EvalResult:
    try:
        s = objective.evaluate(c, 1.0, seed=0, floor=None)
    except Rejected as e:
        return EvalResult.rejected(e.stage, e.reason)
    return EvalResult("ok", "done", quality=s.value, units=1.0)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_asks_and_learns_on_a_toy_objective(name: str) -> None:
    meta = STRATEGIES.meta(name)
    assert isinstance(meta.get("description"), str) and meta["description"].strip()
    obj = CurveObjective("gelu")
    form = FORM if meta.get("form") else None
    strat = make_strategy(name, seed=0, higher_is_better=obj.higher_is_better, form=form)
    assert isinstance(strat, Strategy)
    told: list[EvalResult] = []
    for _ in range(6):
        c = strat.ask()
        assert isinstance(c, Candidate) and "x" in c.formula
        r = _evaluate(obj, c)
        strat.tell(c, r)
        told.append(r)
    assert any(r.ok and math.isfinite(r.quality) for r in told), told
    # a result the strategy never proposed (replayed from a study) is accepted too
    other = Candidate(parse("tanh(x)"))
    strat.tell(other, _evaluate(obj, other))
    # the same name and seed propose the same first candidates
    again = make_strategy(name, seed=0, higher_is_better=obj.higher_is_better, form=form)
    first = make_strategy(name, seed=0, higher_is_better=obj.higher_is_better, form=form)
    assert again.ask().key == first.ask().key


@pytest.mark.parametrize(
    "kind,names", [("task", TASKS), ("probe", PROBES), ("strategy", STRATEGIES)]
)
def test_unknown_names_are_one_line_close_match_errors(kind: str, names: object) -> None:
    from actlab.registry import Registry

    assert isinstance(names, Registry) and names.names()
    first = names.names()[0]
    with pytest.raises((KeyError, ValueError)) as info:
        names.get(first[:-1] + "~")
    msg = str(info.value)
    assert "\n" not in msg and f"unknown {kind}" in msg and first in msg


@pytest.mark.parametrize("name", MODELS.names())
def test_model_preset_builds_and_runs_forward_and_backward(name: str) -> None:
    preset = get_model_preset(name)
    if preset.kind == "text":
        model = build_model(name, "gelu", vocab_size=17)
        x = torch.randint(0, 17, (2, 8))
        want: tuple[int, ...] = (2, 8, 17)
    elif preset.kind == "regression":
        model = build_model(name, "gelu", in_features=3, out_features=2)
        x, want = torch.rand(2, 3) * 2 - 1, (2, 2)
    else:
        size = 32 if name.endswith("_32") else 28
        model = build_model(name, "gelu", num_classes=10, in_chans=1, img_size=size)
        x = torch.randn(2, 1, size, size)
        want = (2, 10)
    out = model(x)
    y = out[0] if isinstance(out, tuple) else out
    assert tuple(y.shape) == want and bool(torch.isfinite(y).all())
    y.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
