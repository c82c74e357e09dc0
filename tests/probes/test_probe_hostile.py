"""Hostile inputs to ``actlab.probe(...)``, the probe classes and ``actlab probe``: every one
gets a one-line error naming the problem (ValueError for the API, exit 2 for the CLI), before
any work starts (no model loaded, nothing trained, no output folder written)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import actlab.probes as P
from actlab.cli import main
from actlab.probes.binning import ebab_entropy

NAN, INF = math.nan, math.inf


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x


def use(model: Any = None, **kw: Any) -> None:
    """Attach, run one forward and summarise: errors may surface at any of those steps."""
    net = Net() if model is None else model
    with P.probe(net, **kw) as p:
        net(torch.randn(2, 5, 8))
    p.summary()


def use_probe(probe: Callable[[], P.Probe]) -> None:
    use(probes=[probe()], where="blocks.*")


def with_context(**extras: Any) -> None:
    net = Net()
    with P.probe(net, probes=["sparsity"]) as p:
        p.set_context(**extras)
        net(torch.randn(2, 5, 8))


def summary_of(key: str) -> None:
    net = Net()
    with P.probe(net, probes=["sparsity"]) as p:
        net(torch.randn(2, 5, 8))
    p.summary(key)


def item_of(key: str) -> None:
    with P.probe(Net(), probes=["sparsity"]) as p:
        p[key]


# (case id, call, a substring the one-line message must contain)
API_CASES: list[tuple[str, Callable[[], Any], str]] = [
    ("model-str", lambda: P.probe("model"), "nn.Module"),  # type: ignore[arg-type]
    ("model-none", lambda: P.probe(None), "nn.Module"),  # type: ignore[arg-type]
    ("probe-unknown", lambda: use(probes=["nope"]), "unknown probe 'nope'"),
    ("probe-int", lambda: use(probes=[123]), "probe"),
    ("probe-empty-list", lambda: use(probes=[]), "no probe"),
    ("where-no-match", lambda: use(where="nomatch*"), "matches no module"),
    ("where-empty-list", lambda: use(where=[]), "where"),
    ("where-empty-str", lambda: use(where=""), "where"),
    ("where-int", lambda: use(where=123), "where"),
    (
        "probe-where-no-match",
        lambda: use(probes=[P.SparsityProbe(where="x*")]),
        "matches no module",
    ),
    ("sample-0", lambda: use(sample=0), "sample"),
    ("sample-neg", lambda: use(sample=-5), "sample"),
    ("sample-nan", lambda: use(sample=NAN), "sample"),
    ("sample-float", lambda: use(sample=1.5), "sample"),
    ("sample-str", lambda: use(sample="64"), "sample"),
    ("sample-bool", lambda: use(sample=True), "sample"),
    ("max-tokens-0", lambda: use(max_tokens=0), "max_tokens"),
    ("max-tokens-inf", lambda: use(max_tokens=INF), "max_tokens"),
    ("every-0", lambda: use(every=0), "every"),
    ("train-stride-neg", lambda: use(train_stride=-1), "train_stride"),
    ("seed-float", lambda: use(seed=1.5), "seed"),
    ("seed-str", lambda: use(seed="x"), "seed"),
    ("mode-bad", lambda: use(mode="sometimes"), "mode"),
    ("log-to-suffix", lambda: use(log_to="out.txt"), ".jsonl or .csv"),
    ("massive-top-k-0", lambda: use_probe(lambda: P.MassiveActivationProbe(top_k=0)), "top_k"),
    ("massive-top-k-neg", lambda: use_probe(lambda: P.MassiveActivationProbe(top_k=-1)), "top_k"),
    (
        "massive-median-0",
        lambda: use_probe(lambda: P.MassiveActivationProbe(median_elems=0)),
        "median_elems",
    ),
    (
        "massive-abs-nan",
        lambda: use_probe(lambda: P.MassiveActivationProbe(abs_threshold=NAN)),
        "abs_threshold",
    ),
    (
        "massive-ratio-neg",
        lambda: use_probe(lambda: P.MassiveActivationProbe(ratio_threshold=-1)),
        "ratio_threshold",
    ),
    ("sparsity-tau-nan", lambda: use_probe(lambda: P.SparsityProbe(tau=NAN)), "tau"),
    ("sparsity-near-neg", lambda: use_probe(lambda: P.SparsityProbe(near_zero=-1)), "near_zero"),
    ("sparsity-window-0", lambda: use_probe(lambda: P.SparsityProbe(window=0)), "window"),
    ("sparsity-history-0", lambda: use_probe(lambda: P.SparsityProbe(history=0)), "history"),
    ("sparsity-criterion", lambda: use_probe(lambda: P.SparsityProbe(criterion="x")), "criterion"),  # type: ignore[arg-type]
    (
        "dist-edges-nan",
        lambda: use_probe(lambda: P.DistributionProbe(edges=[1.0, NAN, 3.0])),
        "edges",
    ),
    ("dist-max-elems-0", lambda: use_probe(lambda: P.DistributionProbe(max_elems=0)), "max_elems"),
    ("entropy-bins-0", lambda: use_probe(lambda: P.EntropyProbe(n_bins=0)), "n_bins"),
    ("entropy-rows-0", lambda: use_probe(lambda: P.EntropyProbe(rows=0)), "rows"),
    ("info-noise-nan", lambda: use_probe(lambda: P.InfoPlaneProbe(noise_var=NAN)), "noise_var"),
    ("info-points-1", lambda: use_probe(lambda: P.InfoPlaneProbe(points=1)), "points"),
    ("info-pca-0", lambda: use_probe(lambda: P.InfoPlaneProbe(pca_dims=0)), "pca_dims"),
    ("info-k-0", lambda: use_probe(lambda: P.InfoPlaneProbe(k=0)), "k"),
    ("info-bins-neg", lambda: use_probe(lambda: P.InfoPlaneProbe(n_bins=-3)), "n_bins"),
    ("dse-sigma-nan", lambda: use_probe(lambda: P.DSEProbe(sigma=NAN)), "sigma"),
    ("dse-repeats-0", lambda: use_probe(lambda: P.DSEProbe(repeats=0)), "repeats"),
    ("attention-norm", lambda: use_probe(lambda: P.AttentionEntropyProbe(norm="x")), "norm"),  # type: ignore[arg-type]
    ("ctx-labels-str", lambda: with_context(labels="abc"), "labels"),
    ("ctx-mask-1d", lambda: with_context(attention_mask=torch.ones(3)), "attention_mask"),
    ("ctx-ids-str", lambda: with_context(input_ids="abc"), "input_ids"),
    ("callback-sample-0", lambda: P.ProbeCallback(sample=0), "sample"),
    ("callback-log-every-0", lambda: P.ProbeCallback(log_every=0), "log_every"),
    ("callback-probe-unknown", lambda: P.ProbeCallback(probes=["nope"]), "unknown probe"),
    ("summary-unknown", lambda: summary_of("nope"), "nope"),
    ("item-unknown", lambda: item_of("nope"), "nope"),
    ("ebab-bins-float", lambda: ebab_entropy(torch.randn(10, 2), n_bins=1.5), "n_bins"),  # type: ignore[arg-type]
    ("ebab-lower-str", lambda: ebab_entropy(torch.randn(10, 2), lower="zero"), "lower"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_hostile_inputs(case: tuple[str, Callable[[], Any], str]) -> None:
    _, call, expect = case
    with pytest.raises(ValueError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg.strip() and expect in msg, msg


def _write_inputs(tmp: Path) -> dict[str, str]:
    (tmp / "dir").mkdir()
    (tmp / "bin.txt").write_bytes(b"\xff\xfe\x00\x81garbage")
    (tmp / "empty.txt").write_text("  \n\n", encoding="utf-8")
    (tmp / "file").write_text("x", encoding="utf-8")
    return {
        "DIR": str(tmp / "dir"),
        "BIN": str(tmp / "bin.txt"),
        "EMPTY": str(tmp / "empty.txt"),
        "MISSING": str(tmp / "missing.txt"),
        "FILE": str(tmp / "file"),
    }


# (case id, argv after "probe", substring of the one-line error); --out is appended unless
# the case gives its own
CLI_CASES: list[tuple[str, list[str], str]] = [
    ("no-model", [], "not both"),
    ("model-and-task", ["minilm", "--task", "fashion-mnist"], "not both"),
    ("probe-unknown", ["minilm", "--probes", "sparsity,nope"], "unknown probe 'nope'"),
    ("probe-empty", ["minilm", "--probes", ","], "--probes"),
    ("probe-needs-labels", ["minilm", "--probes", "infoplane"], "infoplane"),
    ("sample-0", ["minilm", "--sample", "0"], "--sample"),
    ("sample-neg", ["minilm", "--sample", "-1"], "--sample"),
    ("tokens-0", ["smollm2", "--tokens", "0"], "--tokens"),
    ("tokens-neg", ["smollm2", "--tokens", "-5"], "--tokens"),
    ("tokens-huge", ["smollm2", "--tokens", "100000000"], "--tokens"),
    ("lines-0", ["minilm", "--lines", "0"], "--lines"),
    ("lines-neg", ["minilm", "--lines", "-2"], "--lines"),
    ("lines-huge", ["minilm", "--lines", "100000000"], "--lines"),
    ("tokens-for-minilm", ["minilm", "--tokens", "64"], "--tokens"),
    ("lines-for-smollm2", ["smollm2", "--lines", "4"], "--lines"),
    ("lines-for-gemma3", ["gemma3", "--lines", "4"], "--lines"),
    ("tokens-huge-gemma3", ["gemma3", "--tokens", "100000000"], "--tokens"),
    ("act-for-pretrained", ["minilm", "--act", "relu"], "--act"),
    ("epochs-for-pretrained", ["minilm", "--epochs", "3"], "--epochs"),
    ("text-for-task", ["--task", "fashion-mnist", "--text", "MISSING"], "--text"),
    ("epochs-0", ["--task", "fashion-mnist", "--epochs", "0"], "--epochs"),
    ("epochs-neg", ["--task", "fashion-mnist", "--epochs", "-1"], "--epochs"),
    ("max-steps-0", ["--task", "fashion-mnist", "--max-steps", "0"], "--max-steps"),
    ("max-steps-neg", ["--task", "fashion-mnist", "--max-steps", "-3"], "--max-steps"),
    ("task-unknown", ["--task", "nope"], "unknown task"),
    ("arch-unknown", ["--task", "fashion-mnist", "--arch", "nope"], "unknown model"),
    ("act-unparsable", ["--task", "fashion-mnist", "--act", "nope("], "--act"),
    ("act-unknown", ["--task", "fashion-mnist", "--act", "not_an_activation_xyz"], "--act"),
    ("text-missing", ["minilm", "--text", "MISSING"], "does not exist"),
    ("text-dir", ["minilm", "--text", "DIR"], "not a file"),
    ("text-binary", ["minilm", "--text", "BIN"], "UTF-8"),
    ("text-empty", ["minilm", "--text", "EMPTY"], "no text"),
    ("out-is-file", ["minilm", "--out", "FILE"], "not a folder"),
    ("seed-neg", ["minilm", "--seed", "-1"], "--seed"),
    ("seed-huge", ["minilm", "--seed", "99999999999999999999"], "--seed"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_hostile_inputs(
    case: tuple[str, list[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, argv, expect = case
    paths = _write_inputs(tmp_path)
    argv = [paths.get(a, a) for a in argv]

    def work_started(*a: Any, **k: Any) -> Any:
        raise AssertionError("work started before the arguments were validated")

    from actlab.models import pretrained
    from actlab.train import tasks

    monkeypatch.setattr(pretrained, "load_minilm", work_started)
    monkeypatch.setattr(pretrained, "load_smollm2", work_started)
    monkeypatch.setattr(pretrained, "load_gemma3", work_started)
    monkeypatch.setattr(tasks.Task, "loaders", work_started)
    out = tmp_path / "out"
    if "--out" not in argv:
        argv = [*argv, "--out", str(out)]
    assert main(["probe", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("actlab probe: error:"), err
    assert expect in err, err
    assert not out.exists()
