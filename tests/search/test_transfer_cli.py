"""--transfer (finalists re-evaluated on a second task), the verdict in CLI and report, and
the one-line errors of the new flags (shape checks, transfer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from search_helpers import fake_train

from actlab.cli import main
from actlab.report import render_search_report
from actlab.search import Pipeline, finalize, run_search


def test_transfer_reevaluates_the_same_finalists_on_a_second_task(tmp_path: Path) -> None:
    fast = Pipeline(checks=False, cost=None, proxies=False)
    res = run_search("curve:gelu", "evolution", budget=4, study="tr",
                     storage=tmp_path / "f.db", pipeline=fast)  # fmt: skip
    res.task = "digits-mlp"  # pretend it was trained: only the re-evaluations are faked
    seen: list[tuple[str, str | None]] = []

    def recording(task: str, activation: str, seed: int, **kw: Any) -> dict[str, Any]:
        seen.append((task, kw.get("model")))
        return fake_train(task, activation, seed, **kw)

    final = finalize(res, top=2, seeds=3, db=tmp_path / "r.sqlite", train_fn=recording,
                     transfer="fit-bessel")  # fmt: skip
    assert final.transfer is not None and final.transfer_task == "fit-bessel"
    assert final.transfer.activations == final.comparison.activations
    assert {s.seed for s in final.transfer.specs} == {1000, 1001, 1002}
    assert {t for t, _ in seen} == {"digits-mlp", "fit-bessel"}
    assert final.verdict is not None and final.transfer_verdict is not None
    assert final.verdict.headline.startswith("Verdict: ")
    assert len(final.verdict.contrasts) == 2 * 3  # 2 finalists x 3 baselines
    html = render_search_report(res, final)
    assert html.index("<h2>Verdict</h2>") < html.index("<h2>Re-evaluation of the best candidates")
    assert "Transfer to fit-bessel" in html and "transfer: fit-bessel -- Verdict: " in html


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--transfer", "digits-mlp", "--no-final"], "drop --no-final or --transfer"),
        (["--transfer", "digits-mlp"], "a curve: task trains nothing"),
        (["--no-shape", "--shape-monotone", "--shape-f0", "zero"], "--shape-monotone, --shape-f0"),
        (["--shape-range", "0"], "--shape-range must be a number in"),
    ],
)
def test_new_flags_fail_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    rc = main(["search", "--task", "curve:gelu", "--storage", str(tmp_path / "e.db"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_unknown_transfer_task_names_close_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["search", "--task", "digits-mlp", "--transfer", "fashion-mnst",
               "--storage", str(tmp_path / "e.db")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "fashion-mnist" in err and len(err.strip().splitlines()) == 1, err


def test_near_copies_of_a_finalist_are_skipped() -> None:
    from types import SimpleNamespace

    from actlab.search._candidate import as_candidate
    from actlab.search._final import _top

    ranked = [
        SimpleNamespace(candidate=as_candidate(f))
        for f in (
            "relu(x) + 0.01*x*exp(-x**2/2)",
            "relu(x) + 0.0101*x*exp(-x**2/2)",
            "x*sigmoid(1.702*x)",
            "gelu(x)",
        )  # fmt: skip
    ]
    skipped: list[str] = []
    near: list[str] = []
    res = SimpleNamespace(ranked=lambda: ranked)
    picked = _top(res, 3, skipped, near)  # type: ignore[arg-type]
    # the 1% change of eps is the same function within 1%; sigmoid-GELU is not GELU
    assert [c.formula for _, c in picked] == [
        "relu(x) + 0.01 * x * exp(-0.5 * square(x))",
        "x * sigmoid(1.702 * x)",
        "gelu(x)",
    ]
    assert near == ["relu(x) + 0.0101 * x * exp(-0.5 * square(x))"] and not skipped
