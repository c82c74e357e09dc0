"""Hostile flags of ``actlab compare``, ``search`` and ``demo``: refused before any work.

Each case asserts exit status 2, exactly one line on stderr naming the problem, no
traceback, and nothing written (no results database, study storage or report appears in the
working folder). The entry points that would do the work (``compare``, ``run_search``, the
MiniLM loader) are replaced by tripwires, so a case that got past validation fails loudly
instead of training: every flag is checked before any work starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actlab.cli import main

COMPARE = ["compare", "relu", "gelu", "--task", "digits-mlp", "--db", "r.sqlite",
           "--report", "r.html", "--no-progress"]  # fmt: skip
SEARCH = ["search", "--task", "curve:gelu", "--budget", "4", "--storage", "s.db",
          "--report", "r.html"]  # fmt: skip
BIG = "99999999999999999999"


def _compare_acts(*acts: str) -> list[str]:
    return ["compare", *acts, "--task", "digits-mlp", "--db", "r.sqlite", "--no-report"]


ELEVEN = [f"x*sigmoid({k}*x)" for k in range(1, 12)]

# (argv, words the one-line error must contain)
CASES: list[tuple[list[str], str]] = [
    # ------------------------------------------------------------------ compare
    ([*COMPARE, "--seeds", BIG], "at most 10000 seeds"),
    ([*COMPARE, "--seeds", "100000000"], "at most 10000 seeds"),
    ([*COMPARE, "--seeds", "0"], "at least one seed"),
    ([*COMPARE, "--seeds", "-1"], "at least one seed"),
    ([*COMPARE, "--seeds", "1,1"], "duplicate seeds"),
    ([*COMPARE, "--seeds", "1,-2"], "seeds must be in"),
    ([*COMPARE, "--seeds", f"0,{BIG}"], "seeds must be in"),
    ([*COMPARE, "--seeds", "1.5"], "--seeds"),
    ([*COMPARE, "--seeds", "nan"], "--seeds"),
    ([*_compare_acts(*ELEVEN), "--seeds", "10000"], "at most 100000"),
    ([*COMPARE, "--max-steps", "0"], "--max-steps"),
    ([*COMPARE, "--max-steps", "-5"], "--max-steps"),
    ([*COMPARE, "--max-steps", "1e3"], "invalid int value"),
    ([*COMPARE, "--epochs", "0"], "--epochs"),
    ([*COMPARE, "--epochs", BIG], "--epochs"),
    ([*COMPARE, "--device", "nonsense"], "not a torch device"),
    ([*COMPARE, "--device", "cuda:99"], "cuda"),
    ([*COMPARE, "--device", "meta"], "training supports cpu, cuda and mps"),
    ([*COMPARE, "--device", ""], "--device"),
    ([*COMPARE, "--workers", "0"], "--workers"),
    ([*COMPARE, "--workers", "100000"], "--workers"),
    ([*COMPARE, "--task", "nosuch"], "unknown task"),
    ([*COMPARE, "--task", "curve:gelu"], "trains nothing"),
    ([*COMPARE, "--model", "nosuch"], "unknown model"),
    ([*COMPARE, "--model", "gpt_char_mini"], "text model"),
    ([*COMPARE, "--dtype", "float16"], "invalid choice"),
    ([*COMPARE, "--report", "/nonexistent/dir/x.html"], "does not exist"),
    ([*COMPARE, "--report", "r.txt"], ".html"),
    ([*COMPARE, "--report", "adir.html"], "is a directory"),
    ([*COMPARE, "--no-report"], "contradict"),
    ([*COMPARE, "--study", ""], "--study"),
    ([*COMPARE, "--study", "x" * 5000], "--study"),
    ([*COMPARE, "--db", ""], "--db"),
    (["compare", "relu", "--db", "r.sqlite"], "required: --task"),
    (_compare_acts("x*y", "gelu"), "formula in x"),
    (_compare_acts("", "gelu"), "formula in x"),
    (_compare_acts("3", "gelu"), "must use the input x"),
    (_compare_acts("relu", "relu"), "listed twice"),
    (_compare_acts("relu", "nosuch"), "unknown activation"),
    (_compare_acts("x*sigmoid(1.702*x)", 'expr(formula="x * sigmoid(1.702*x)")'), "listed twice"),
    (_compare_acts("relu", "__import__('os').system('touch pwned')"), "formula in x"),
    (_compare_acts("relu", "crrelu(eps=nan)"), "literal"),
    (_compare_acts("relu", "crrelu(eps=1e999)"), "eps"),
    # --set model.KEY=VALUE: unknown keys list the valid ones; bad values fail before training
    ([*COMPARE, "--set", "model.nrom_layer=rmsnorm"], "valid keys: model.dropout"),
    ([*COMPARE, "--set", "model.mlp_layer=glu"], "valid keys"),  # the MLP classifier has none
    ([*COMPARE, "--set", "norm_layer=rmsnorm"], "keys start with 'model.'"),
    ([*COMPARE, "--set", "model.norm_layer"], "KEY=VALUE"),
    ([*COMPARE, "--set", "model.norm_layer="], "KEY=VALUE"),
    ([*COMPARE, "--set", "model.norm_layer=a", "--set", "model.norm_layer=b"], "given twice"),
    ([*COMPARE, "--set", "model.act_layer=relu"], "ACT argument"),
    ([*COMPARE, "--set", "model.num_classes=3"], "valid keys"),
    ([*COMPARE, "--set", "model.norm_layer=rmsnrom"], "Did you mean: rmsnorm"),
    ([*COMPARE, "--set", "model.norm_layer=glu"], "does not fit"),
    ([*COMPARE, "--set", "model.norm_layer=rmsnorm(eps=-1)"], "eps must be > 0"),
    ([*COMPARE, "--set", "model.norm_layer=rmsnorm(eps=nan)"], "literal"),
    ([*COMPARE, "--set", "model.norm_layer=rmsnorm(eps=1e999)"], "finite"),
    ([*COMPARE, "--set", "model.norm_layer=rmsnorm(num_features=3)"], "set by the model"),
    ([*COMPARE, "--set", "model.norm_layer=rmsnorm(foo=1)"], "no parameter 'foo'"),
    ([*COMPARE, "--set", "model.norm_layer=__import__('os').system('touch pwned')"], "layer spec"),
    ([*COMPARE, "--set", "model.norm_layer=3"], "layer spec string"),
    ([*COMPARE, "--set", "model.hidden=(0,)"], "hidden width"),
    ([*COMPARE, "--set", "model.hidden=wide"], "tuple of whole numbers"),
    ([*COMPARE, "--set", "model.dropout=nan"], "must be a number"),
    ([*COMPARE, "--set", "model.dropout=1e999"], "finite"),
    ([*COMPARE, "--model", "vit_mini_28", "--set", "model.num_heads=5"], "not divisible"),
    (
        [*COMPARE, "--model", "vit_mini_28", "--set", "model.mlp_layer=glu(act='nosuch')"],
        "unknown activation",
    ),
    ([*COMPARE, "--model", "vit_mini_28", "--set", "model.attn_score=layernorm"], "does not fit"),
    # ------------------------------------------------------------------ search
    ([*SEARCH, "--budget", "5", "--funnel", "inf"], "--funnel"),
    *[
        ([*SEARCH, "--budget", b], "budget")
        for b in ("0", "-1", "nan", "inf", "1e999", "0s", "1e300", "ten", "1h1h", "")
    ],
    *[([*SEARCH, "--funnel", f], "--funnel") for f in ("0", "-1", "nan", "3,1", ",", "1e999")],
    *[([*SEARCH, "--funnel", "1,2", "--keep", k], "--keep") for k in ("0", "1.5", "nan", "-0.1")],
    ([*SEARCH, "--keep", "0.5"], "--keep"),
    *[
        ([*SEARCH, "--floor", f], "--floor")
        for f in ("nan@1", "0.3@0", "0.3@-1", "0.3@inf", "inf@1", "0.3@nan", "@", "high")
    ],
    ([*SEARCH, "--task", "digits-mlp", "--floor", "5@1"], "accuracy floor"),
    *[([*SEARCH, "--max-nodes", n], "--max-nodes") for n in ("0", "-1", "100000")],
    *[([*SEARCH, "--max-cost", c], "--max-cost") for c in ("0", "-1", "nan", "inf")],
    *[([*SEARCH, "--task", "digits-mlp", "--max-steps", m], "--max-steps") for m in ("0", "-1")],
    ([*SEARCH, "--max-steps", "5"], "training tasks"),
    *[([*SEARCH, "--top", t], "--top") for t in ("0", "-1", "1000")],
    *[([*SEARCH, "--final-seeds", f], "--final-seeds") for f in ("0", "-1", "100000000")],
    *[([*SEARCH, "--top-seeds", t], "--top-seeds") for t in ("0", "-1", "1000")],
    ([*SEARCH, "--top-seeds", "3"], "--funnel"),
    *[([*SEARCH, "--seed", s], "--seed") for s in ("-1", BIG)],
    *[([*SEARCH, "--workers", w], "--workers") for w in ("0", "100000")],
    ([*SEARCH, "--task", "nosuch"], "unknown task"),
    ([*SEARCH, "--task", "curve:"], "curve"),
    ([*SEARCH, "--task", "curve:nosuch"], "curve target"),
    ([*SEARCH, "--task", "curve:x*y"], "curve target"),
    ([*SEARCH, "--task", "curve:__import__('os')"], "curve target"),
    ([*SEARCH, "--task", "curve:x/(x-0.5)"], "not finite"),
    ([*SEARCH, "--model", "mlp"], "training tasks"),
    ([*SEARCH, "--task", "digits-mlp", "--model", "nosuch"], "unknown model"),
    ([*SEARCH, "--task", "digits-mlp", "--model", "gpt_char_mini"], "text model"),
    ([*SEARCH, "--form", "x*sigmoid(2*x)"], "--form"),
    ([*SEARCH, "--strategy", "bo"], "--form"),
    ([*SEARCH, "--strategy", "bo", "--form", "x*y"], "--form"),
    ([*SEARCH, "--strategy", "bo", "--form", "relu(x)"], "no numeric constant"),
    ([*SEARCH, "--sampler", "gp"], "--sampler"),
    ([*SEARCH, "--sampler", "cma"], "invalid choice"),
    ([*SEARCH, "--strategy", "nope"], "invalid choice"),
    ([*SEARCH, "--no-final", "--top", "3"], "--no-final"),
    ([*SEARCH, "--no-final", "--db", "x.sqlite"], "--no-final"),
    ([*SEARCH, "--db", "x.sqlite"], "training tasks"),
    ([*SEARCH, "--no-report"], "contradict"),
    ([*SEARCH, "--report", "/nonexistent/dir/r.html"], "does not exist"),
    ([*SEARCH, "--ray", "auto", "--workers", "2"], "--workers"),
    ([*SEARCH, "--ray", " "], "--ray"),
    ([*SEARCH, "--study", ""], "--study"),
    ([*SEARCH, "--storage", ""], "--storage"),
    ([*SEARCH, "--budget"], "expected one argument"),
    # ------------------------------------------------------------------ demo
    (["demo", "--target", "nosuch"], "unknown activation"),
    (["demo", "--target", ""], "formula in x"),
    (["demo", "--target", "x*y"], "formula in x"),
    (["demo", "--target", "3"], "must use the input x"),
    (["demo", "--target", "crrelu(eps=nan)"], "literal"),
    (["demo", "--target", "crrelu(eps='nan')"], "eps"),
    # ------------------------------------------------------------------ run settings
    *[([*COMPARE, "--threads", t], "--threads") for t in ("0", "-2", BIG, "100000")],
    ([*COMPARE, "--threads", "two"], "invalid int"),
    ([*COMPARE, "--kernel", "fast"], "invalid choice"),
    ([*COMPARE, "--kernel", ""], "invalid choice"),
    ([*COMPARE, "--kernel"], "expected one argument"),
    *[([*SEARCH, "--threads", t], "--threads") for t in ("0", BIG)],
    ([*SEARCH, "--kernel", "Native"], "invalid choice"),
]


@pytest.fixture
def tripwires(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Work in ``tmp_path``; any call that would start work fails the test."""
    import actlab.bench.comparison
    import actlab.search

    def tripped(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before every flag was checked")

    monkeypatch.setattr(actlab.bench.comparison, "compare", tripped)
    monkeypatch.setattr(actlab.bench.comparison, "run_compare", tripped)
    monkeypatch.setattr(actlab.search, "run_search", tripped)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir.html").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "needle"), CASES, ids=lambda v: repr(v)[-60:] if isinstance(v, list) else None
)
def test_hostile_flag_is_one_line_error_before_any_work(
    argv: list[str], needle: str, tripwires: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(os.listdir(tripwires))
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = int(e.code or 0)
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert rc == 2, (argv, out.err[-500:])
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    assert lines[0].startswith("actlab") and "error:" in lines[0], lines[0]
    assert needle in lines[0], (needle, lines[0])
    assert sorted(os.listdir(tripwires)) == before  # nothing written
    assert not os.path.exists(tripwires / "pwned")


def test_demo_target_is_checked_before_loading_the_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The zoo listing (step 1) is not printed when the target is bad: nothing ran."""
    assert main(["demo", "--target", "crrelu(eps=-1e999)"]) == 2
    out = capsys.readouterr()
    assert "the zoo" not in out.out and len(out.err.strip().splitlines()) == 1
