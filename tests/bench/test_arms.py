"""Arms of a comparison: ``[LABEL=]ACT[@model.KEY=VALUE ...]`` compares layers in one table.

An arm's own model overrides go into its runs' config (so they key its runs), win over the
global ``--set`` for their keys, and its label names its row; plain arms keep the keys they
had before arms existed, so their databases resume.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from bench_helpers import compare_main

from actlab.bench.comparison import compare, plan_compare
from actlab.bench.plan import parse_arm
from actlab.bench.stats import paired_ttest

PLAN: dict[str, Any] = dict(task="digits-mlp", seeds=2, epochs=1, task_defaults=False)
# keys planned before arms existed (device cpu, dtype float32; then + norm_layer=rmsnorm)
PLAIN_HASH = "d6fcc701d669d731"
RMS_HASH = "419e1a1ea49c9906"


def test_parse_arm_syntax() -> None:
    assert parse_arm("gelu") == (None, "gelu", {})
    assert parse_arm("crrelu(eps=0.02)") == (None, "crrelu(eps=0.02)", {})  # not a label
    assert parse_arm('expr(formula="x*sigmoid(x)")') == (None, 'expr(formula="x*sigmoid(x)")', {})
    assert parse_arm("BN+ReLU=relu") == ("BN+ReLU", "relu", {})
    assert parse_arm("af=silu@model.mlp_layer=af_kan(norm='none')@model.hidden=(8, 8)") == (
        "af",
        "silu",
        {"mlp_layer": "af_kan(norm='none')", "hidden": (8, 8)},
    )
    # '@' inside quotes or brackets does not split
    assert parse_arm("a=gelu@model.mlp_layer=x(s='u@v')")[2] == {"mlp_layer": "x(s='u@v')"}
    for bad, words in [
        ("silu@", "empty override"),
        ("@model.depth=2", "names no activation"),
        ("lab=", "names no activation"),
        ("silu@mlp_layer=mlp", "keys start with 'model.'"),
        ("silu@model.depth", "KEY=VALUE"),
        ("silu@model.depth=1@model.depth=2", "given twice"),
        ("x" * 70 + "=silu", "at most 64"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_arm(bad)


def _hashes(plan: Any) -> dict[str, str]:
    return {s.arm_label: s.config_hash for s in plan.specs}


def test_plain_arms_keep_their_keys_and_arm_overrides_key_their_runs() -> None:
    plain = plan_compare(["relu", "gelu"], **PLAN)
    assert [s.arm for s in plain.specs] == [""] * 4 and plain.arms == ["relu", "gelu"]
    assert set(_hashes(plain).values()) == {PLAIN_HASH}
    arms = plan_compare(["mlp=relu", "gelu", "rms=relu@model.norm_layer=RMSNorm(eps=1e-6)"], **PLAN)
    assert arms.arms == ["mlp", "gelu", "rms"]
    assert _hashes(arms) == {"mlp": PLAIN_HASH, "gelu": PLAIN_HASH, "rms": RMS_HASH}
    assert {s.key for s in plain.specs} < {s.key for s in arms.specs}  # same runs, resumable
    # the arm spelled the --set way is the same run; the default label is the canonical arm
    one = plan_compare(["relu@model.norm_layer=rmsnorm"], **PLAN)
    assert one.arms == ["relu@model.norm_layer=rmsnorm"] and _hashes(one) == {one.arms[0]: RMS_HASH}
    assert one.specs[0].label() == "relu@model.norm_layer=rmsnorm seed=0"
    assert "arms" in one.study_config and "arms" not in plain.study_config


def test_arm_overrides_win_over_global_ones() -> None:
    plan = plan_compare(
        ["relu", "ln=relu@model.norm_layer=layernorm@model.hidden=(16,)"],
        **PLAN,
        model_overrides={"norm_layer": "rmsnorm", "dropout": 0.1},
    )
    kw = {s.arm_label: s.config["model_kwargs"] for s in plan.specs}
    assert kw["relu"] == {"dropout": 0.1, "norm_layer": "rmsnorm"}
    assert kw["ln"] == {"dropout": 0.1, "hidden": [16], "norm_layer": "layernorm"}


@pytest.mark.parametrize(
    ("arms", "over", "words"),
    [
        (["relu", "relu"], None, "activation listed twice: relu"),
        (["a=relu", "a=gelu"], None, "arm label listed twice: a"),
        (["relu", "x=relu"], None, "arms 'relu' and 'x' are the same runs"),
        (["relu", "x=relu@model.norm_layer=rmsnorm"], {"norm_layer": "rmsnorm"}, "same runs"),
        (["relu", "x=relu@model.nope=1"], None, r"arm 'x=relu@model.nope=1': .*valid keys"),
        (["relu", "x=relu@model.norm_layer=nosuch"], None, "arm 'x=relu@model.norm_layer=nosuch'"),
        (["relu", "x=relu@model.act=gelu"], None, "list it as an ACT argument"),
    ],
)
def test_bad_arms_are_one_line_errors(arms: list[str], over: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words) as e:
        plan_compare(arms, **PLAN, model_overrides=over)
    assert "\n" not in str(e.value)


def _layer_train(task: str, activation: str, seed: int, **kw: Any) -> dict[str, Any]:
    """A metric that depends on the model overrides (rmsnorm better, layernorm worse)."""
    layer = (kw.get("model_kwargs") or {}).get("norm_layer", "")
    shift = {"rmsnorm": 0.02, "layernorm": -0.01}.get(layer.split("(")[0], 0.0)
    value = 0.9 + shift + 0.003 * math.sin(7 * seed + len(layer))
    return {"metric_name": "accuracy", "metric_value": value, "higher_is_better": True}


def test_arms_resume_and_share_one_table(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    kw: dict[str, Any] = dict(task="digits-mlp", seeds=4, epochs=1, db=db, train_fn=_layer_train)
    first = compare(["relu"], **kw)
    assert len(first.report.records) == 4
    arms = ["bn=relu", "rms=relu@model.norm_layer=rmsnorm", "ln=relu@model.norm_layer=layernorm"]
    res = compare(arms, **kw)
    assert len(res.report.skipped) == 4 and len(res.report.records) == 8  # bn runs reused
    rows = {r.activation: r for r in res.summary.rows}
    assert list(rows) == ["bn", "rms", "ln"] and res.summary.baseline == "bn"
    base = [_layer_train("", "relu", s)["metric_value"] for s in range(4)]
    raw = {}
    for name, layer in [("rms", "rmsnorm"), ("ln", "layernorm")]:
        vals = [
            _layer_train("", "relu", s, model_kwargs={"norm_layer": layer})["metric_value"]
            for s in range(4)
        ]
        assert rows[name].values == pytest.approx(vals)
        assert rows[name].delta == pytest.approx(sum(vals) / 4 - sum(base) / 4)
        raw[name] = paired_ttest(base, vals).pvalue
        assert rows[name].t_p == pytest.approx(raw[name])
    # Holm over the two comparisons: smallest p times 2, the other max(that, p)
    lo, hi = sorted(raw, key=raw.__getitem__)
    assert rows[lo].t_p_holm == pytest.approx(min(1.0, 2 * raw[lo]))
    assert rows[hi].t_p_holm == pytest.approx(min(1.0, max(2 * raw[lo], raw[hi])))
    assert rows["rms"].verdict == "better" and rows["ln"].verdict == "worse"
    from actlab.report import render_report

    page = render_report(res)
    assert "<h2>Arms</h2>" in page and "model.norm_layer=rmsnorm" in page
    assert "<th>arm</th>" in page and "Δ vs bn" in page


def test_cli_arms_in_one_table_and_bad_arms_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["--task", "digits-mlp", "--seeds", "2", "--epochs", "1", "--db", "r.sqlite",
            "--no-progress", "--train-fn", "bench_helpers:fake_train"]  # fmt: skip
    for bad, words in [
        ("rms=relu@norm_layer=rmsnorm", "keys start with 'model.'"),
        ("rms=relu@model.nope=1", "has no option model.nope"),
        ("rms=relu@model.norm_layer=nosuch", "model.norm_layer=nosuch"),
        ("rms=relu@", "empty override"),
    ]:
        assert compare_main(["relu", bad, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("actlab compare: error:") and words in err and "\n" not in err
        assert not Path("r.sqlite").exists() and not list(tmp_path.glob("*.html"))
    arms = ["base=relu", "rms=relu@model.norm_layer=rmsnorm"]
    assert compare_main([*arms, *argv]) == 0
    out = capsys.readouterr()
    assert "rms seed=1" in out.err and "4 run(s) trained now" in out.err
    assert "arm " in out.out and "Δ vs base" in out.out
    assert "<h2>Arms</h2>" in Path("compare-digits-mlp.html").read_text()
