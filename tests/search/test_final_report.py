"""Simplification, the final re-evaluation and the HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search_helpers import fake_train

from actlab.expr import parse, to_string
from actlab.report import render_search_report, write_search_report
from actlab.search import Pipeline, SearchResult, finalize, run_search, simplify
from actlab.search._simplify import equivalent

FAST = Pipeline(checks=False, cost=None, proxies=False)


def test_simplify_removes_dead_parts_and_keeps_the_function() -> None:
    cases = {
        "x + 1e-9*sin(x)": "x",
        "relu(x) + 0*beta": "relu(x)",
        "max(x, x - 1)": "x",
        "x*sigmoid(1.70200001*x)": "x * sigmoid(1.702 * x)",
        "x*sigmoid(beta*x)": "x * sigmoid(beta * x)",
    }
    for before, after in cases.items():
        s = simplify(parse(before))
        assert to_string(s) == after
        assert equivalent(parse(before), s, 1e-6)
    assert not equivalent(parse("x*sigmoid(beta*x)"), parse("x*sigmoid(x)"))  # beta matters


def _search(tmp_path: Path, task: str = "curve:gelu") -> SearchResult:
    return run_search(
        task,
        "evolution",
        budget=12,
        study="fin",
        storage=tmp_path / "f.db",
        pipeline=Pipeline(proxies=False),
    )


def test_finalize_on_a_curve_task_scores_baselines_and_top(tmp_path: Path) -> None:
    res = _search(tmp_path)
    final = finalize(res, top=2)
    assert len(final.specs) == 2 and set(final.baselines) <= set(final.scores)
    assert final.scores["gelu"] == max(final.scores.values())


def test_finalize_uses_the_compare_machinery_with_fresh_seeds(tmp_path: Path) -> None:
    res = _search(tmp_path)
    res.task = "digits-mlp"  # pretend it was trained: only the re-evaluation is faked
    final = finalize(res, top=2, seeds=3, db=tmp_path / "r.sqlite", train_fn=fake_train)
    cmp = final.comparison
    assert cmp is not None and cmp.activations[:3] == ["gelu", "relu", "crrelu"]
    assert {s.seed for s in cmp.specs} == {1000, 1001, 1002}
    rows = {r.activation: r for r in cmp.summary.rows}
    assert rows["gelu"].is_baseline and all(r.n == 3 for r in rows.values())
    html = render_search_report(res, final)
    assert "Re-evaluation of the best candidates" in html and "p (t)" in html


def test_finalize_trains_the_model_the_search_trained(tmp_path: Path) -> None:
    from actlab.search import TrainObjective

    res = _search(tmp_path)
    res.task = "fashion-mnist"
    seen: list[dict[str, Any]] = []

    def recording_train(task: str, activation: str, seed: int, **kw: Any) -> dict[str, Any]:
        seen.append(dict(kw, task=task))
        return fake_train(task, activation, seed, **kw)

    obj = TrainObjective("fashion-mnist", model="mlp", overrides={"max_steps": 7})
    finalize(res, top=1, seeds=2, db=tmp_path / "r.sqlite", train_fn=recording_train, objective=obj)
    assert seen and all(
        k["model"] == "mlp" and k["max_steps"] == 7 and k["task"] == "fashion-mnist" for k in seen
    ), seen[:2]


def test_report_has_every_section(tmp_path: Path) -> None:
    res = _search(tmp_path)
    final = finalize(res, top=2)
    out = write_search_report(res, tmp_path / "r.html", final)
    text = out.read_text()
    for section in (
        "Best formulas",
        "Pareto front",
        "Search progress",
        "Rejections",
        "Re-evaluation of the best candidates",
    ):
        assert section in text
    assert text.count("data:image/png;base64,") >= 3
    assert "not drawn" not in text and "nothing to plot" not in text
