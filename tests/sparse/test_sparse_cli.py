"""``actlab sparsify`` in-process: bad input is one line and exit 2; --out reloads; --eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sparse_eval_helpers import save_char_llama
from sparse_helpers import logits

from actlab.cli import main
from actlab.data.errors import DatasetNotFoundError
from actlab.sparse import (
    SparseError,
    apply_state,
    calibration_windows,
    load_causal_lm,
    load_sparse,
    make_method,
)
from actlab.sparse._text import document

SMALL = ["--window", "32", "--calib-tokens", "256"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with a character tokenizer, saved as a Hugging Face folder."""
    try:
        document("play:comedies/twelfth-night")
        document("kjv:1:genesis")
    except (DatasetNotFoundError, SparseError) as e:
        pytest.skip(f"offline text not installed: {e}")
    return save_char_llama(tmp_path_factory.mktemp("tiny") / "tiny")


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("actlab sparsify: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_bad_flags_are_refused_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tiny: Path
) -> None:
    import actlab.sparse as S

    def tripwire(*_a: object, **_k: object) -> None:
        raise AssertionError("the model was loaded before the flags were checked")

    monkeypatch.setattr(S, "load_causal_lm", tripwire)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    notes = tmp_path / "empty.txt"
    notes.write_text("  \n")
    m = str(tiny)
    cases = [
        ([m, "--method", "teal", "--sparsity", "1"], "[0, 1)"),
        ([m, "--method", "teal", "--sparsity", "-0.1"], "[0, 1)"),
        ([m, "--method", "teal", "--sparsity", "nan"], "[0, 1)"),
        ([m, "--method", "teel", "--sparsity", ".5"], "teal"),
        (["nosuchmodel", "--method", "teal", "--sparsity", ".5"], "unknown model"),
        ([str(tmp_path), "--method", "teal", "--sparsity", ".5"], "no config.json"),
        ([m, "--method", "teal"], "give --sparsity"),
        ([m, "--method", "teal", "--sparsity", ".5", "--set", "alocation=greedy"], "allocation"),
        ([m, "--method", "teal", "--sparsity", ".5", "--set", "allocation=best"], "allocation"),
        ([m, "--method", "teal", "--sparsity", ".5", "--set", "sparsity=.3"], "--sparsity"),
        ([m, "--method", "teal", "--sparsity", ".5", "--set", "novalue"], "KEY=VALUE"),
        ([m, "--method", "all", "--eval", "--set", "step=.1"], "prefix the method"),
        ([m, "--method", "all", "--eval", "--set", "cats.step=.1"], "unknown --set key"),
        ([m, "--method", "all", "--sparsity", ".5"], "add --eval"),
        ([m, "--method", "all", "--eval", "--out", "o"], "needs one method"),
        ([m, "--method", "teal", "--sparsity", ".5", "--sparsities", ".1"], "applies to --eval"),
        ([m, "--method", "teal", "--eval", "--sparsities", "a,b"], "give numbers"),
        ([m, "--method", "teal", "--eval", "--sparsities", "0,1.5"], "[0, 1)"),
        ([m, "--method", "teal", "--sparsity", ".5", "--out", str(full)], "--force"),
        ([m, "--method", "teal", "--sparsity", ".5", "--out", str(notes)], "not a folder"),
        ([m, "--method", "teal", "--sparsity", ".5", "--calib", "nofile.txt"], "no such file"),
        ([m, "--method", "teal", "--sparsity", ".5", "--calib", str(notes)], "no text"),
        ([m, "--method", "teal", "--sparsity", ".5", "--calib-tokens", "0"], "--calib-tokens"),
        ([m, "--method", "teal", "--eval", "--eval-tokens", "100"], "less than one --window"),
        ([m, "--method", "teal", "--eval", "--prefill", "255"], "--prefill"),
        ([m, "--method", "teal", "--sparsity", ".5", "--report", "r.html"], "applies to --eval"),
        ([m, "--method", "teal", "--sparsity", ".5", "--no-eval-cache"], "applies to --eval"),
        ([m, "--method", "teal", "--sparsity", ".5", "--generate", " "], "non-empty prompt"),
        ([m, "--method", "teal", "--sparsity", ".5", "--device", "tpu9"], "--device"),
        ([m, "--method", "teal", "--sparsity", ".5", "--tune-steps", "-1"], "--tune-steps"),
        ([m, "--method", "teal", "--sparsity", ".5", "--tune-lr", ".1"], "need --tune-steps"),
        ([m, "--method", "teal", "--sparsity", ".5", "--tune-tokens", "99"], "need --tune-steps"),
        ([m, "--method", "teal", "--sparsity", ".5", "--tune-rows"], "need --tune-steps"),
        ([m, "--method", "teal", "--sparsity", ".5", "--tune-seed", "1"], "need --tune-steps"),
        (
            [m, "--method", "teal", "--sparsity", ".5", "--tune-steps", "3", "--tune-seed", "-1"],
            "seed",
        ),
        ([m, "--method", "teal", "--sparsity", ".5", "--tune-rank", "4"], "need --tune-steps"),
        ([m, "--method", "teal", "--sparsity", ".5", "--tune-weights"], "need --tune-steps"),
        ([m, "--method", "teal", "--sparsity", ".5", "--tune-hidden", "1"], "need --tune-steps"),
        (
            [m, "--method", "teal", "--sparsity", ".5", "--tune-steps", "3", "--tune-hidden"]
            + ["-1"],
            "hidden must be a number >= 0",
        ),
        (
            [m, "--method", "teal", "--sparsity", ".5", "--tune-steps", "3", "--tune-weights"]
            + ["--tune-weights-lr", "-1"],
            "weights_lr",
        ),
        (
            [m, "--method", "teal", "--sparsity", ".5", "--tune-steps", "3", "--tune-rank", "-1"],
            "--tune-rank",
        ),
        ([m, "--method", "teal", "--sparsity", ".5", "--tune-steps", "3", "--tune-lr", "0"], "lr"),
        (
            [m, "--method", "teal", "--sparsity", ".5", "--tune-steps", "3", "--tune-batch", "0"],
            "batch",
        ),
    ]
    for argv, needle in cases:
        line = _error(capsys, ["sparsify", *argv])
        assert needle in line, (argv, line)
    with pytest.raises(SystemExit) as e:
        main(["sparsify", m, "--method", "teal", "--sparsity", "half"])
    assert e.value.code == 2
    assert not (tmp_path / "o").exists()


def test_errors_found_after_loading_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: Path
) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Only a few words of calibration text.\n")
    base = ["sparsify", str(tiny), "--method", "teal", "--sparsity", ".5"]
    assert "text too short" in _error(capsys, [*base, "--window", "32", "--calib", str(short)])
    assert "exceeds the model's 128" in _error(capsys, [*base, "--window", "256"])


def test_out_saves_a_model_that_reloads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: Path
) -> None:
    out = tmp_path / "out"
    argv = ["sparsify", str(tiny), "--method", "cats", "--sparsity", "0.4", *SMALL]
    assert main([*argv, "--out", str(out), "--generate", "To be, or", "--max-new-tokens", "4"]) == 0
    text = capsys.readouterr().out
    assert "realised" in text and "dense :" in text and "sparse:" in text
    info = json.loads((out / "config.json").read_text())["actlab_sparsity"]
    assert info["method"] == "cats" and info["params"]["sparsity"] == 0.4
    assert info["calibration"]["tokens"] == 256 and info["mode"] == "decode"
    assert info["model"]["name"] == "tiny" and len(info["model"]["config_sha256"]) == 64
    loaded = load_sparse(out)
    # the same calibration by hand gives the same state and the same logits
    model, tok = load_causal_lm(str(tiny))
    calib = calibration_windows(tok, tokens=256, window=32)
    state = make_method("cats", sparsity=0.4).calibrate(model, calib.batches())
    assert loaded.state == state
    apply_state(model, state).set_mode("decode")
    ids = torch.randint(4, 100, (2, 20), generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits(loaded.model, [ids])[0], logits(model, [ids])[0])
    prompt = tok("To be", return_tensors="pt")
    assert loaded.model.generate(**prompt, max_new_tokens=3, do_sample=False).shape == (1, 8)
    # a second run into the same folder needs --force
    assert main([*argv, "--out", str(out)]) == 2
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--force"]) == 0


def test_calib_mixed_calibrates_on_comedies_and_books(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: Path
) -> None:
    out = tmp_path / "out"
    argv = ["sparsify", str(tiny), "--method", "cats", "--sparsity", "0.4", *SMALL]
    assert main([*argv, "--calib", "mixed", "--out", str(out)]) == 0
    capsys.readouterr()
    info = json.loads((out / "config.json").read_text())["actlab_sparsity"]["calibration"]
    model, tok = load_causal_lm(str(tiny))
    calib = calibration_windows(tok, tokens=256, window=32, source="mixed")
    assert info["text"] == "mixed" and info["documents"] == list(calib.documents)
    assert any(d.startswith("kjv:") for d in info["documents"])
    state = make_method("cats", sparsity=0.4).calibrate(model, calib.batches())
    assert load_sparse(out).state == state


@pytest.mark.parametrize("what", ["gains", "rows", "weights"])
def test_tune_steps_save_the_tuned_gains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: Path, what: str
) -> None:
    out = tmp_path / "out"
    argv = ["sparsify", str(tiny), "--method", "teal", "--sparsity", "0.5", *SMALL]
    tune = ["--tune-steps", "3", "--tune-lr", "0.01", "--tune-tokens", "512", "--tune-seed", "2"]
    rows, weights = what != "gains", what == "weights"
    tune += ["--tune-rows", "--tune-rank", "2"] if rows else []
    tune += ["--tune-weights", "--tune-weights-lr", "0.001"] if weights else []
    assert main([*argv, *tune, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "tune: step 3/3" in err and "tuned" in err and "KL" in err
    info = json.loads((out / "config.json").read_text())["actlab_sparsity"]
    assert info["tuning"]["steps"] == 3 and info["tuning"]["lr"] == 0.01
    assert info["tuning"]["seed"] == 2
    assert info["tuning"]["windows"] == 512 // 32 and info["calibration"]["tokens"] == 256
    loaded = load_sparse(out)
    assert loaded.state.gains and loaded.state.tuning == info["tuning"]
    assert info["tuning"]["rows"] is rows and bool(loaded.state.scales) is rows
    assert info["tuning"]["rank"] == 2 * rows and bool(loaded.state.lowrank) is rows
    assert info["tuning"]["weights"] is weights and bool(loaded.state.deltas) is weights
    if weights:
        assert "the sparsified linears' weights" in err
        assert info["tuning"]["weights_lr"] == 0.001 and loaded.state.version == 5
    config = json.loads((out / "config.json").read_text())
    assert ("actlab_row_scales" in config) is rows  # the saved weights hold the scales
    params = dict(loaded.model.named_parameters())
    for k, g in loaded.state.gains.items():
        assert torch.equal(params[k].detach(), g)
    # the saved state on the original dense model gives the reloaded model's logits (the
    # reloaded weights hold the row scales already and are not scaled a second time)
    model, _ = load_causal_lm(str(tiny))
    apply_state(model, loaded.state).set_mode("decode")
    ids = torch.randint(4, 100, (2, 20), generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits(loaded.model, [ids])[0], logits(model, [ids])[0])


def test_eval_prints_the_table_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: Path
) -> None:
    pytest.importorskip("matplotlib")
    report = tmp_path / "r.html"
    argv = ["sparsify", str(tiny), "--method", "all", "--eval", *SMALL, "--eval-tokens", "64"]
    argv += ["--sparsities", "0.5", "--protocol", "last-half", "--report", str(report)]
    argv += ["--set", "teal.calibration=dense"]
    assert main(argv) == 0
    cap = capsys.readouterr()
    assert "| method | target |" in cap.out and "| wina | 0.50 |" in cap.out
    assert "teal s=0.50" in cap.err  # progress on stderr
    page = report.read_text()
    assert "last-half" in page and "64 tokens (2 windows of 32)" in page and "256 tokens" in page
    data = json.loads(report.with_suffix(".json").read_text())
    methods = [(r["method"], r["target"]) for r in data["rows"]]
    assert methods == [("dense", 0.0)] + [(m, 0.5) for m in ("cats", "chess", "teal", "wina")]
    teal = next(r for r in data["rows"] if r["method"] == "teal")
    assert teal["params"]["calibration"] == "dense" and teal["protocol"] == "last-half"
    # the same evaluation again reads the dense result from the cache; --no-eval-cache does not
    argv = ["sparsify", str(tiny), "--method", "teal", "--eval", *SMALL, "--eval-tokens", "64"]
    argv += ["--sparsities", "0.5", "--protocol", "last-half", "--report", str(report)]
    argv += ["--set", "calibration=dense"]
    assert main(argv) == 0
    cap = capsys.readouterr()
    assert "dense result: read from" in cap.out and "dense: evaluating" not in cap.err
    again = json.loads(report.with_suffix(".json").read_text())
    assert again["rows"][0]["ppl"] == data["rows"][0]["ppl"]
    assert (
        again["rows"][1]["ppl"] == teal["ppl"]
        and again["rows"][1]["agreement"] == teal["agreement"]
    )
    assert main([*argv, "--no-eval-cache"]) == 0
    cap = capsys.readouterr()
    assert "dense: evaluating" in cap.err and "dense result" not in cap.out


def test_unavailable_model_name_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from actlab.models import pretrained
    from actlab.sparse._saved import resolve_model

    monkeypatch.delattr(pretrained, "load_gemma3", raising=False)
    with pytest.raises(SparseError, match="not available in this actlab"):
        resolve_model("gemma3")


def test_bench_prints_tokens_per_second_for_each_path(
    capsys: pytest.CaptureFixture[str], tiny: Path
) -> None:
    argv = ["sparsify", str(tiny), "--method", "teal", "--sparsity", "0.0", *SMALL]
    assert main([*argv, "--bench", "--max-new-tokens", "4"]) == 0
    text = capsys.readouterr().out
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "tok/s" not in ln]
    paths = {(r.split("|")[1].strip(), r.split("|")[2].strip()) for r in rows}
    assert ("dense", "lean loop") in paths and ("dense", "generate") in paths
    assert ("teal 0.00 (torch)", "generate") in paths
    # sparsity 0 is the dense function: every generated token equals the dense one
    assert all(r.split("|")[5].strip() == "1.000" for r in rows)
    assert all(r.split("|")[6].strip() == "4" for r in rows)  # equal before any difference
    assert "LM head stays dense" in text
    assert "needs one method" in _error(
        capsys, ["sparsify", str(tiny), "--method", "all", "--eval", "--bench"]
    )


@pytest.fixture(scope="module")
def saved(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny`` sparsified with TEAL at 50%, tuned (gains and rows) and saved with --out."""
    out = tmp_path_factory.mktemp("saved") / "teal50"
    argv = ["sparsify", str(tiny), "--method", "teal", "--sparsity", "0.5", *SMALL]
    assert main([*argv, "--tune-steps", "2", "--tune-rows", "--out", str(out)]) == 0
    return out


def test_a_saved_model_is_used_as_saved(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tiny: Path,
    saved: Path,
) -> None:
    pytest.importorskip("matplotlib")
    import actlab.sparse as S
    from actlab.sparse import evaluate, heldout_windows

    capsys.readouterr()
    info = json.loads((saved / "config.json").read_text())["actlab_sparsity"]
    assert info["base"] == str(tiny)  # the dense baseline a later run loads by default

    def tripwire(*_a: object, **_k: object) -> None:
        raise AssertionError("a saved model was calibrated or tuned again")

    monkeypatch.setattr(S, "calibration_windows", tripwire)
    monkeypatch.setattr(S, "tune_gains", tripwire)
    assert main(["sparsify", str(saved)]) == 0  # no action: what the folder holds
    out = capsys.readouterr().out
    assert "teal(" in out and "calibrated on 256 tokens" in out and "tuned: " in out
    report = tmp_path / "r.html"
    argv = ["sparsify", str(saved), "--eval", "--window", "32", "--eval-tokens", "64"]
    assert (
        main([*argv, "--report", str(report), "--generate", "To be", "--max-new-tokens", "3"]) == 0
    )
    out = capsys.readouterr().out
    assert "dense :" in out and "sparse:" in out and "| teal | 0.50 |" in out
    rows = json.loads(report.with_suffix(".json").read_text())["rows"]
    assert [(r["method"], r["target"]) for r in rows] == [("dense", 0.0), ("teal", 0.5)]
    # the oracle: the reloaded model scored by hand against the dense model
    loaded = load_sparse(saved)
    dense, tok = load_causal_lm(str(tiny))
    held = heldout_windows(tok, tokens=64, window=32)
    ref = evaluate(dense, held.ids, protocol="decode")
    res = evaluate(loaded.model, held.ids, protocol="decode", reference=ref)
    assert rows[0]["ppl"] == pytest.approx(ref.ppl, rel=1e-9)
    assert rows[1]["ppl"] == pytest.approx(res.ppl, rel=1e-9)
    assert rows[1]["agreement"] == pytest.approx(res.agreement, rel=1e-9)
    assert rows[1]["tuning"]["rows"] is True and rows[1]["calib_tokens"] == 256
    assert "256 tokens of shakespeare" in report.read_text()
    assert main(["sparsify", str(saved), "--bench", "--max-new-tokens", "2"]) == 0
    assert "| teal 0.50 (torch) | generate |" in capsys.readouterr().out


def test_a_saved_model_refuses_what_it_fixes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: Path, saved: Path
) -> None:
    s = str(saved)
    for flag in (
        ["--method", "teal"],
        ["--sparsity", "0.4"],
        ["--sparsities", "0.4"],
        ["--set", "allocation=greedy"],
        ["--calib", "mixed"],
        ["--calib-tokens", "512"],
        ["--tune-steps", "3"],
        ["--tune-rows"],
        ["--tune-seed", "1"],
        ["--tune-weights"],
        ["--out", str(tmp_path / "o")],
    ):
        line = _error(capsys, ["sparsify", s, *flag])
        assert f"{flag[0]}: " in line and "saved sparsified model (teal at 0.50)" in line
    assert "--dense: unknown model" in _error(capsys, ["sparsify", s, "--eval", "--dense", "x"])
    other = save_char_llama(tmp_path / "other", layers=3)
    line = _error(capsys, ["sparsify", s, "--bench", "--dense", str(other)])
    assert "is not the model" in line and "--dense" in line
    assert "--report applies to --eval" in _error(capsys, ["sparsify", s, "--report", "r.html"])
    # a saved folder whose dense model cannot be found: --dense is asked for, one line
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in saved.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    config = json.loads((moved / "config.json").read_text())
    del config["actlab_sparsity"]["base"]
    (moved / "config.json").write_text(json.dumps(config))
    assert "give --dense MODEL" in _error(capsys, ["sparsify", str(moved), "--eval"])
    assert main(["sparsify", str(moved), "--generate", "To", "--dense", str(tiny)]) == 0
    capsys.readouterr()
    # and the other mode: --dense is refused, --method is asked for
    assert "applies to a saved" in _error(
        capsys, ["sparsify", str(tiny), "--method", "teal", "--sparsity", ".4", "--dense", s]
    )
    assert "give --method" in _error(capsys, ["sparsify", str(tiny), "--sparsity", ".4"])


def test_equal_prefix_counts_the_tokens_before_the_first_difference() -> None:
    import torch

    from actlab._cli.sparsify import equal_prefix

    a = torch.tensor([5, 6, 7, 8])
    assert equal_prefix(a, a.clone()) == 4
    assert equal_prefix(a, torch.tensor([5, 6, 0, 8])) == 2
    assert equal_prefix(a, torch.tensor([0, 6, 7, 8])) == 0
    assert equal_prefix(a[:0], a[:0]) == 0


@pytest.fixture(scope="module")
def seeds(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """``tiny`` at TEAL 50%, tuned (gains, rows, weights) with tune seeds 0 and 1, saved."""
    folders = []
    for seed in (0, 1):
        out = tmp_path_factory.mktemp("seeds") / f"s{seed}"
        argv = ["sparsify", str(tiny), "--method", "teal", "--sparsity", "0.5", *SMALL]
        tune = ["--tune-steps", "2", "--tune-rows", "--tune-weights", "--tune-seed", str(seed)]
        assert main([*argv, *tune, "--tune-weights-lr", "1e-3", "--out", str(out)]) == 0
        folders.append(out)
    return folders


def test_average_saves_the_soup_of_saved_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: Path, seeds: list[Path]
) -> None:
    from actlab.sparse import average_states, load_state

    capsys.readouterr()
    out = tmp_path / "soup"
    argv = ["sparsify", str(seeds[0]), "--average", str(seeds[1]), "--out", str(out)]
    assert main([*argv, "--generate", "To be", "--max-new-tokens", "3"]) == 0
    printed = capsys.readouterr().out
    assert "average 2" in printed and "seed 0" in printed and "seed 1" in printed
    assert "dense :" in printed and "sparse:" in printed
    # the oracle: average_states of the two saved states, applied to the dense model
    want = average_states([load_state(s / "sparsity.safetensors") for s in seeds])
    soup = load_sparse(out)
    assert soup.state == want and soup.state.tuning["average"] == 2
    assert soup.info["base"] == str(tiny) and soup.info["calibration"]["tokens"] == 256
    model, _ = load_causal_lm(str(tiny))
    apply_state(model, want).set_mode("decode")
    ids = torch.randint(4, 100, (2, 20), generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits(soup.model, [ids])[0], logits(model, [ids])[0])
    assert main(["sparsify", str(out)]) == 0  # a soup is a saved model like any other
    assert "(runs: seed 0, KL last" in capsys.readouterr().out


def test_average_refuses_what_cannot_be_averaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: Path, saved: Path, seeds: list[Path]
) -> None:
    a, b = str(seeds[0]), str(seeds[1])
    line = _error(capsys, ["sparsify", str(tiny), "--method", "teal", "--sparsity", ".5",
                           "--average", a])  # fmt: skip
    assert "--average applies to a saved sparsified model" in line
    assert "is given twice" in _error(capsys, ["sparsify", a, "--average", a])
    assert "not a saved sparsified model" in _error(capsys, ["sparsify", a, "--average", str(tiny)])
    assert "is one of the averaged runs" in _error(capsys, ["sparsify", a, "--average", b,
                                                            "--out", b])  # fmt: skip
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    assert "pass --force" in _error(capsys, ["sparsify", a, "--average", b, "--out", str(full)])
    assert "--tune-seed: " in _error(capsys, ["sparsify", a, "--average", b, "--tune-seed", "3"])
    # another tuning (gains and rows, no weights): one line from average_states
    line = _error(capsys, ["sparsify", a, "--average", str(saved)])
    assert "tuned other deltas than state 0" in line
    other = save_char_llama(tmp_path / "other", layers=3)
    moved = tmp_path / "o50"
    argv = ["sparsify", str(other), "--method", "teal", "--sparsity", "0.5", *SMALL]
    assert main([*argv, "--tune-steps", "1", "--out", str(moved)]) == 0
    capsys.readouterr()
    assert "from another model than" in _error(capsys, ["sparsify", a, "--average", str(moved)])
    untuned = tmp_path / "untuned"
    assert main([*argv, "--out", str(untuned)]) == 0
    capsys.readouterr()
    assert "is not tuned" in _error(capsys, ["sparsify", str(untuned), "--average", a])
