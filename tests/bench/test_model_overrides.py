"""Model overrides (``--set model.KEY=VALUE`` / ``compare(model_overrides=...)``) in the run key.

Another norm layer is another run; the same overrides in another order (or spelled another
equivalent way) are the same run; no overrides leave the keys of earlier runs unchanged.
The real trainer receives them as ``model_kwargs`` and builds the model with them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_helpers import compare_main as run_cli

from actlab.bench.comparison import compare, plan_compare
from actlab.bench.plan import parse_set_overrides
from actlab.bench.store import ResultsStore

PLAN = dict(task="digits-mlp", seeds=1, epochs=1, task_defaults=False)


def _keys(**kw: object) -> set[tuple]:
    return {s.key for s in plan_compare(["relu", "gelu"], **PLAN, **kw).specs}  # type: ignore[arg-type]


def test_overrides_are_part_of_the_key_in_canonical_form() -> None:
    base = _keys()
    assert _keys(model_overrides={}) == base and _keys(model_overrides=None) == base
    ln = _keys(model_overrides={"norm_layer": "layernorm"})
    rms = _keys(model_overrides={"norm_layer": "rmsnorm"})
    assert not (base & ln) and not (ln & rms) and not (base & rms)
    a = _keys(model_overrides={"norm_layer": "rmsnorm(eps=1e-5)", "hidden": (32,)})
    b = _keys(model_overrides={"hidden": [32], "model.norm_layer": "RMSNorm(eps=0.00001)"})
    assert a == b and not (a & rms)
    plan = plan_compare(["relu"], **PLAN, model_overrides={"norm_layer": "rms_norm"})  # type: ignore[arg-type]
    assert plan.config["model_kwargs"] == {"norm_layer": "rmsnorm"}


def test_parse_set_overrides_values_and_order() -> None:
    one = parse_set_overrides(["model.norm_layer=rmsnorm", "model.hidden=(64, 32)"])
    two = parse_set_overrides(["model.hidden=(64,32)", "model.norm_layer=rmsnorm"])
    assert one == two == {"norm_layer": "rmsnorm", "hidden": (64, 32)}
    assert parse_set_overrides(["model.mlp_layer=glu(act='silu')"]) == {
        "mlp_layer": "glu(act='silu')"
    }
    assert parse_set_overrides(["model.dropout=0.1", "model.depth=6"]) == {
        "dropout": 0.1,
        "depth": 6,
    }
    for bad, words in [
        (["model.depth=1", "model.depth=2"], "given twice"),
        (["depth=1"], "keys start with 'model.'"),
        (["model.depth"], "KEY=VALUE"),
        (["model.depth="], "KEY=VALUE"),
        (["=3"], "KEY=VALUE"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_set_overrides(bad)


def test_python_compare_passes_overrides_to_the_real_trainer(tmp_path: Path) -> None:
    res = compare(
        ["relu"],
        task="digits-mlp",
        seeds=1,
        epochs=1,
        max_steps=2,
        db=tmp_path / "r.sqlite",
        model_overrides={"norm_layer": "layernorm"},
    )
    (rec,) = res.records
    assert rec.ok, rec.error
    assert res.specs[0].config["model_kwargs"] == {"norm_layer": "layernorm"}
    with ResultsStore(tmp_path / "r.sqlite") as store:
        assert store.records(res.specs)[0].ok
    with pytest.raises(ValueError, match="valid keys: model.dropout, model.hidden"):
        compare(["relu"], task="digits-mlp", db=tmp_path / "x.sqlite",
                model_overrides={"mlp_layer": "glu"})  # fmt: skip
    assert not (tmp_path / "x.sqlite").exists()


def test_cli_set_reaches_the_run_and_a_repeat_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["relu", "--task", "digits-mlp", "--seeds", "1", "--max-steps", "2", "--epochs", "1",
            "--db", "r.sqlite", "--no-report", "--no-progress"]  # fmt: skip
    sets = ["--set", "model.norm_layer=rmsnorm", "--set", "model.hidden=(16,)"]
    assert run_cli([*argv, *sets]) == 0
    assert "1 run(s) trained now" in capsys.readouterr().err
    swapped = ["--set", "model.hidden=(16,)", "--set", "model.norm_layer=rmsnorm(eps=1e-6)"]
    assert run_cli([*argv, *swapped]) == 0
    assert "0 run(s) trained now, 1 reused" in capsys.readouterr().err
    assert run_cli([*argv, "--set", "model.norm_layer=layernorm"]) == 0
    assert "1 run(s) trained now" in capsys.readouterr().err
