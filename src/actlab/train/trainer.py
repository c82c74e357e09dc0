"""The training loop and ``run_training``, the one entry point the compare machinery calls.

    result = run_training("fashion-mnist", "crrelu", seed=0, epochs=3, out_dir=Path("runs/x"))
    result.metric, result.value, result.higher_is_better       # "accuracy", 0.87, True
    result.history[-1]["val_accuracy"]; result.trajectories["blocks.0.mlp.act.eps"]

One run = seed everything -> build loaders and model -> AdamW over ``param_groups`` with a
cosine schedule and linear warm-up, gradient clipping, optional label smoothing -> evaluate
val and test after every epoch. With ``out_dir`` it writes ``metrics.jsonl`` (one line per
epoch, flushed), ``last.safetensors`` (atomic) and finally ``result.json`` (atomic), so a
killed run leaves only complete files. On CPU the run is bit-for-bit reproducible for a
given seed and thread count (``torch.use_deterministic_algorithms`` while it runs).
Mixed precision: ``dtype=torch.bfloat16`` (or float16 with a grad scaler) trains under
autocast with float32 weights; float32 / float64 train in that precision.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actlab.optim import param_groups
from actlab.registry import ActivationSpec
from actlab.train.callbacks import Callback, ProgressBar, StopTraining, notify
from actlab.train.checkpoint import activation_scalars, save_checkpoint, write_json_atomic
from actlab.train.config import TrainConfig, lr_at
from actlab.train.result import RunResult, act_label
from actlab.train.seed import determinism, seed_everything
from actlab.train.tasks import Task, TaskData, get_task

__all__ = ["run_training", "evaluate", "train_model"]

_AUTOCAST = (torch.bfloat16, torch.float16)


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    if dtype in _AUTOCAST:
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


def _loss(logits: Tensor, y: Tensor, smoothing: float = 0.0, kind: str = "image") -> Tensor:
    """Cross-entropy over the last axis: (B, K) vs (B,) or (B, T, V) vs (B, T); for a
    regression task the mean squared error of (B, d) predictions against (B, d) targets."""
    if kind == "regression":
        return F.mse_loss(logits.float(), y.float())
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), label_smoothing=smoothing
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Any, kind: str, *, device: torch.device, dtype: torch.dtype
) -> dict[str, float]:
    """Mean loss and the task metric on every batch of ``loader``.

    Image: ``accuracy`` (fraction correct). Text: ``bpc`` = summed cross-entropy / tokens / ln 2.
    Regression: ``loss`` = mean squared error over every target value, ``rmse`` its root.
    """
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        with _autocast(device, dtype):
            logits = model(x)
        if kind == "regression":
            total_loss += float((logits.float() - y.float()).square().sum())
            count += y.numel()
            continue
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum"
        )
        total_loss += float(loss)
        count += y.numel()
        if kind == "image":
            correct += int((logits.argmax(-1) == y).sum())
    model.train(was_training)
    mean = total_loss / max(count, 1)
    if kind == "regression":
        return {"loss": mean, "rmse": math.sqrt(mean)}
    if kind == "image":
        return {"loss": mean, "accuracy": correct / max(count, 1)}
    return {"loss": mean, "bpc": mean / math.log(2)}


_DTYPE_NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float64": torch.float64,
    "fp64": torch.float64,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def _parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key not in _DTYPE_NAMES:
            raise ValueError(f"unknown dtype {dtype!r}; use float32, float64, bfloat16 or float16")
        return _DTYPE_NAMES[key]
    if dtype not in (torch.float32, torch.float64) + _AUTOCAST:
        raise ValueError(f"dtype must be float32, float64, bfloat16 or float16, got {dtype}")
    return dtype


def _input_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _AUTOCAST else dtype


@contextlib.contextmanager
def _runtime(kernel: str | None, threads: int | None) -> Iterator[None]:
    """Use activation kernel mode ``kernel`` and ``threads`` CPU threads inside the block."""
    from actlab.activations import kernel_mode

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with kernel_mode(kernel) if kernel is not None else contextlib.nullcontext():
            yield
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)


@dataclass
class _Loop:
    """The mutable state of one training loop."""

    model: nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    cfg: TrainConfig
    device: torch.device
    dtype: torch.dtype
    total: int
    warmup: int
    smoothing: float
    callbacks: Sequence[Any]
    kind: str = "image"
    step: int = 0
    stop: bool = False

    def lr(self, step: int) -> float:
        return lr_at(step, self.total, self.warmup, self.cfg)

    def train_step(self, x: Tensor, y: Tensor) -> Tensor:
        for g in self.opt.param_groups:
            g["lr"] = self.lr(self.step)
        with _autocast(self.device, self.dtype):
            logits = self.model(x)
        loss = _loss(logits, y, self.smoothing, self.kind)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip is not None and self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.step += 1
        return loss.detach()

    def epoch(self, loader: Any) -> tuple[float, int]:
        """Train one pass of ``loader``; returns (mean loss, items seen)."""
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        n_batches = n_items = 0
        for x, y in loader:
            loss = self.train_step(x, y)
            loss_sum += loss
            n_batches += 1
            n_items += y.numel()
            try:
                notify(self.callbacks, "on_step_end", self.step, loss)
            except StopTraining:
                self.stop = True
            if n_batches % _NAN_CHECK_EVERY == 0 and not math.isfinite(float(loss_sum)):
                break  # diverged: the caller records the epoch and stops
            if self.stop or self.step >= self.total:
                break
        return float(loss_sum) / max(n_batches, 1), n_items


_NAN_CHECK_EVERY = 100


def train_model(
    model: nn.Module,
    task: Task,
    data: TaskData,
    cfg: TrainConfig,
    *,
    device: torch.device,
    dtype: torch.dtype,
    out_dir: Path | None = None,
    callbacks: Sequence[Any] = (),
    meta: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list[Any]], int, bool]:
    """Train ``model`` in place; returns (history, trajectories, steps, diverged)."""
    groups = param_groups(model, cfg.weight_decay, exclude_1d=cfg.no_decay_1d)
    fused = device.type == "cuda" and dtype != torch.float64
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused or None)
    steps_per_epoch = len(data.train)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    loop = _Loop(
        model,
        opt,
        torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        cfg,
        device,
        dtype,
        total,
        warmup=min(int(round(cfg.warmup_epochs * steps_per_epoch)), total),
        smoothing=cfg.label_smoothing if task.kind == "image" else 0.0,
        callbacks=callbacks,
        kind=task.kind,
    )
    metric = task.metric
    unit = {"image": "images_per_s", "regression": "samples_per_s"}.get(task.kind, "tokens_per_s")
    history: list[dict[str, Any]] = []
    trajectories: dict[str, list[Any]] = {k: [v] for k, v in activation_scalars(model).items()}
    jsonl = (out_dir / "metrics.jsonl").open("a", encoding="utf-8") if out_dir else None
    diverged, start = False, time.perf_counter()
    notify(
        callbacks,
        "on_train_begin",
        dict(meta or {}, total_steps=total, steps_per_epoch=steps_per_epoch),
    )
    model.train()
    try:
        for epoch in range(1, cfg.epochs + 1):
            if loop.step >= total:
                break
            t0 = time.perf_counter()
            data.train.set_epoch(epoch - 1)
            notify(callbacks, "on_epoch_begin", epoch, min(steps_per_epoch, total - loop.step))
            train_loss, n_items = loop.epoch(data.train)
            train_seconds = time.perf_counter() - t0
            diverged = not math.isfinite(train_loss)
            last = loop.step >= total or epoch == cfg.epochs or diverged or loop.stop
            t1 = time.perf_counter()
            val = evaluate(model, data.val, task.kind, device=device, dtype=dtype)
            test = (
                evaluate(model, data.test, task.kind, device=device, dtype=dtype)
                if cfg.eval_test_each_epoch or last
                else {"loss": math.nan, metric: math.nan}
            )
            scalars = activation_scalars(model)
            for k, v in scalars.items():
                trajectories.setdefault(k, []).append(v)
            record: dict[str, Any] = {
                "epoch": epoch,
                "step": loop.step,
                "train_loss": train_loss,
                "val_loss": val["loss"],
                f"val_{metric}": val[metric],
                "test_loss": test["loss"],
                f"test_{metric}": test[metric],
                "lr": loop.lr(max(loop.step - 1, 0)),
                "seconds": train_seconds,
                "eval_seconds": time.perf_counter() - t1,
                "elapsed": time.perf_counter() - start,
                unit: n_items / max(train_seconds, 1e-9),
                "act_params": scalars,
            }
            history.append(record)
            if jsonl is not None:
                jsonl.write(json.dumps(record, allow_nan=True) + "\n")
                jsonl.flush()
            if out_dir is not None and cfg.checkpoint == "last":
                save_checkpoint(
                    model,
                    out_dir / "last.safetensors",
                    dict(meta or {}, epoch=epoch, step=loop.step),
                )
            try:
                notify(callbacks, "on_epoch_end", record, model)
            except StopTraining:
                loop.stop = True
            if diverged or loop.stop:
                break
    except StopTraining:  # raised from on_train_begin / on_epoch_begin
        pass
    finally:
        if jsonl is not None:
            jsonl.close()
    return history, trajectories, loop.step, diverged


def run_training(
    task: str | Task,
    act: ActivationSpec,
    seed: int,
    *,
    model: str | None = None,
    epochs: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    out_dir: Path | str | None = None,
    progress: bool = False,
    max_steps: int | None = None,
    callbacks: Sequence[Callback | Any] = (),
    config: TrainConfig | None = None,
    model_kwargs: dict[str, Any] | None = None,
    **overrides: Any,
) -> RunResult:
    """Train ``model`` (default: the task's) with activation ``act`` from ``seed``; evaluate.

    ``config`` replaces the task's default :class:`TrainConfig`; ``epochs``, ``max_steps``
    and any ``TrainConfig`` field given as a keyword (``lr=1e-3``) override it.
    ``model_kwargs`` override fields of the model preset's config (``{"depth": 6}``; for text
    models ``block_size`` also sets the training window). The final
    test metric is that of the model after the last epoch (no early stopping).
    """
    t = get_task(task) if isinstance(task, str) else task
    cfg = config if config is not None else t.config()
    changes = dict(overrides)
    if epochs is not None:
        changes["epochs"] = epochs
    if max_steps is not None:
        changes["max_steps"] = max_steps
    cfg = cfg.replace(**changes) if changes else cfg
    model_name = t.resolve_model(model)
    dev = torch.device(device)
    dtype = _parse_dtype(dtype)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)  # a rerun starts a fresh log
    label = act_label(act)
    meta = dict(task=t.name, model=model_name, act=label, seed=int(seed))
    cbs = list(callbacks)
    if progress:
        cbs.append(ProgressBar(f"{t.name} {model_name} {label} seed={seed}"))

    start = time.perf_counter()
    with determinism(cfg.deterministic, dev), _runtime(cfg.kernel_mode, cfg.num_threads):
        seed_everything(seed)
        mkw = dict(model_kwargs or {})
        data = t.loaders(
            cfg, seed, dev, _input_dtype(dtype), model=model_name, block_size=mkw.get("block_size")
        )
        torch.manual_seed(seed)  # model init does not depend on how much data loading drew
        arch = {k: v for k, v in mkw.items() if k != "block_size"}  # block_size came via data
        net = t.build_model(model_name, act, data, **arch).to(dev)
        if dtype not in _AUTOCAST:
            net = net.to(dtype)
        history, traj, steps, diverged = train_model(
            net, t, data, cfg, device=dev, dtype=dtype, out_dir=out, callbacks=cbs, meta=meta
        )
    seconds = time.perf_counter() - start
    final = history[-1] if history else {}
    result = RunResult(
        task=t.name,
        model=model_name,
        act=label,
        seed=int(seed),
        metric=t.metric,
        value=float(final.get(f"test_{t.metric}", math.nan)),
        higher_is_better=t.higher_is_better,
        history=history,
        trajectories=traj,
        seconds=seconds,
        steps=steps,
        diverged=diverged,
        config=dict(
            cfg.to_dict(),
            task=t.name,
            model=model_name,
            model_kwargs=mkw,
            act=label,
            seed=int(seed),
            device=str(dev),
            dtype=str(dtype).replace("torch.", ""),
        ),
        checkpoint=str(out / "last.safetensors")
        if out is not None and cfg.checkpoint == "last" and history
        else None,
    )
    if out is not None:
        write_json_atomic(out / "result.json", result.to_dict())
    notify(cbs, "on_train_end", result)
    return result
