"""``compare``: plan the matrix, run what is missing, summarise what is stored.

    from actlab.bench import compare
    res = compare(["gelu", "crrelu"], task="digits-mlp", seeds=5, epochs=3)
    for row in res.summary.rows:
        print(row.activation, row.mean, row.ci, row.t_p_holm, row.mark)

Rerunning the same call resumes: finished runs are read back from the store, only missing
or failed ones are trained.

An activation may be an *arm* with its own model overrides and a label
(:func:`~actlab.bench.plan.parse_arm`), so structured layers compare in one table:

    compare(["mlp=silu", "relu_kan=silu@model.mlp_layer=relu_kan"], task="fit-bessel")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actlab.bench.plan import (
    MAX_EPOCHS,
    RunSpec,
    config_hash,
    formula_spec,
    model_overrides_config,
    parse_arm,
    parse_seeds,
    plan_runs,
    resolve_arms,
)
from actlab.bench.runner import MatrixEvents, MatrixReport, TrainRef, run_matrix
from actlab.bench.store import DEFAULT_DB, ResultsStore, RunRecord
from actlab.bench.summary import CompareSummary, summarize

__all__ = [
    "ComparePlan",
    "CompareResult",
    "arm_labels",
    "arm_table",
    "compare",
    "default_study_name",
    "plan_compare",
    "resolve_task_defaults",
    "kernel_config",
    "run_compare",
]


class _Arms:
    """The arms of a matrix, derived from its run specs."""

    specs: list[RunSpec]

    @property
    def activations(self) -> list[str]:
        """The distinct canonical activations (arms may share one)."""
        return list(dict.fromkeys(s.activation for s in self.specs))

    @property
    def arms(self) -> list[str]:
        """The row labels, first = baseline (the activations when no arm has a label)."""
        return arm_labels(self.specs)

    @property
    def labelled(self) -> bool:
        """Whether some arm has a label or overrides of its own (tables say "arm")."""
        return any(s.arm for s in self.specs)


@dataclass
class CompareResult(_Arms):
    """Everything a comparison produced: table, stored records, what ran now."""

    study: str
    specs: list[RunSpec]
    records: list[RunRecord]  # every stored record of the matrix (this call or earlier)
    summary: CompareSummary
    report: MatrixReport
    db_url: str

    @property
    def missing(self) -> list[RunSpec]:
        """Runs of the matrix with no stored record (e.g. still running elsewhere)."""
        have = {r.spec for r in self.records}
        return [s for s in self.specs if s not in have]


def arm_labels(specs: Sequence[RunSpec]) -> list[str]:
    """The distinct row labels of ``specs`` in plan order."""
    return list(dict.fromkeys(s.arm_label for s in specs))


def arm_table(specs: Sequence[RunSpec]) -> dict[str, dict[str, Any]]:
    """``{label: {"activation": ..., "model_kwargs": {...}}}`` of the arms of ``specs``."""
    out: dict[str, dict[str, Any]] = {}
    for s in specs:
        out.setdefault(
            s.arm_label,
            {"activation": s.activation, "model_kwargs": dict(s.config.get("model_kwargs", {}))},
        )
    return out


def default_study_name(task: str, model: str, activations: Sequence[str], chash: str) -> str:
    """A readable, stable study name, e.g. ``digits-mlp/default:relu,gelu@1a2b3c4d``."""
    name = f"{task}/{model}:{','.join(activations)}@{chash[:8]}"
    return name if len(name) <= 200 else name[:191] + "…" + chash[:8]


def resolve_task_defaults(
    task: str, model: str | None, epochs: int | None
) -> tuple[str, int, dict[str, Any]]:
    """``(model, epochs, default config)`` of a task of :mod:`actlab.train`.

    Resolving the defaults before planning makes them part of each run's key: a run of the
    default model equals a run naming it, and results are not reused after the task's
    default training recipe changes. Unknown tasks or models fail here, before any run.
    """
    from actlab.train import get_task

    t = get_task(task)
    name = t.resolve_model(model)
    defaults = t.config().to_dict()
    return name, int(epochs or defaults["epochs"]), defaults


@dataclass(frozen=True)
class ComparePlan(_Arms):
    """A checked comparison, ready to run: its matrix and the config shared by its runs.

    Built once by :func:`plan_compare` (every argument checked, nothing read or written);
    :func:`run_compare` runs it. The CLI plans while it checks its flags and runs that plan,
    so nothing is validated twice.
    """

    task: str
    specs: list[RunSpec]
    seeds: list[int]
    config: dict[str, Any]

    @property
    def study_config(self) -> dict[str, Any]:
        """The config stored with the study: :attr:`config`, plus ``arms`` (label ->
        activation and model overrides) when some arm has a label or overrides of its own."""
        if not self.labelled:
            return self.config
        return {**self.config, "arms": arm_table(self.specs)}


def kernel_config(kernel: str | None, threads: int | None, device: str = "cpu") -> dict[str, Any]:
    """The config entries of a run's kernel mode and CPU threads (checked, one-line errors).

    ``kernel=None`` takes the mode in force (``set_kernel_mode`` / ``ACTLAB_KERNEL``, else
    ``auto``); ``auto`` and ``threads=None`` add nothing, so runs planned before these
    settings existed keep their keys. Another mode (or a thread count) is another run.
    """
    from actlab.activations import check_kernel_mode, get_kernel_mode, kernel_unavailable

    mode = get_kernel_mode() if kernel is None else check_kernel_mode(kernel, "--kernel ")
    why = kernel_unavailable(mode, device)
    if why:
        raise ValueError(f"--kernel {mode} cannot run on {device}: {why}; use --kernel auto")
    out: dict[str, Any] = {}
    if mode != "auto":
        out["kernel_mode"] = mode
    if threads is not None:
        whole = isinstance(threads, int) and not isinstance(threads, bool)
        if not (whole and 1 <= threads <= MAX_THREADS):
            raise ValueError(f"--threads must be a whole number in 1..{MAX_THREADS}, got {threads}")
        out["num_threads"] = threads
    return out


MAX_THREADS = 1024  # torch threads of one run


def plan_compare(
    activations: Sequence[str],
    *,
    task: str,
    model: str | None = None,
    seeds: int | str | Sequence[int] = 3,
    epochs: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    max_steps: int | None = None,
    kernel: str | None = None,
    threads: int | None = None,
    extra_config: dict[str, Any] | None = None,
    task_defaults: bool = True,
    model_overrides: dict[str, Any] | None = None,
) -> ComparePlan:
    """Check every argument of :func:`compare` and plan its matrix (reads and writes nothing).

    ``task_defaults=False`` (a custom train function) keeps model and epochs as given.
    ``model_overrides`` (``{"norm_layer": "rmsnorm"}``) are checked against the model and
    stored canonically in the config (:func:`~actlab.bench.plan.model_overrides_config`).
    ``activations`` may be arms ``[LABEL=]ACT[@model.KEY=VALUE ...]``
    (:func:`~actlab.bench.plan.resolve_arms`): an arm's own overrides win over
    ``model_overrides`` for their keys and go into that arm's run config.
    """
    if epochs is not None and (isinstance(epochs, bool) or not 1 <= epochs <= MAX_EPOCHS):
        raise ValueError(f"epochs must be in 1..{MAX_EPOCHS} (None: the task's own), got {epochs}")
    if max_steps is not None and (
        isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1
    ):
        raise ValueError(f"max_steps must be a whole number >= 1 (or None), got {max_steps}")
    config: dict[str, Any] = {"device": device, "dtype": dtype, **(extra_config or {})}
    config.update(kernel_config(kernel, threads, device))
    if max_steps is not None:
        config["max_steps"] = int(max_steps)
    texts = list(activations)
    for text in texts:  # bad arm syntax or a bad formula first, then the task
        formula_spec(parse_arm(text)[1])
    if task_defaults:
        model, epochs, config["_task_defaults"] = resolve_task_defaults(task, model, epochs)
    config.update(model_overrides_config(task, model, model_overrides))
    seed_list = parse_seeds(seeds)
    arms = resolve_arms(texts, task=task, model=model, overrides=model_overrides)
    specs = plan_runs(arms, seed_list, task=task, model=model, epochs=epochs, config=config)
    return ComparePlan(task, specs, seed_list, config)


def compare(
    activations: Sequence[str],
    *,
    task: str,
    model: str | None = None,
    seeds: int | str | Sequence[int] = 3,
    epochs: int | None = None,
    db: str | Path | ResultsStore = DEFAULT_DB,
    workers: int = 1,
    ray: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    max_steps: int | None = None,
    kernel: str | None = None,
    threads: int | None = None,
    study: str | None = None,
    train_fn: TrainRef = None,
    events: MatrixEvents | None = None,
    confidence: float = 0.95,
    extra_config: dict[str, Any] | None = None,
    model_overrides: dict[str, Any] | None = None,
) -> CompareResult:
    """Run (or resume) the activation x seed matrix and summarise it.

    ``activations[0]`` is the baseline of the paired tests. ``seeds`` is a count (seeds
    ``0..n-1``) or explicit seeds. ``device``, ``dtype``, ``max_steps``, ``kernel`` (the
    activation kernel mode of every run; None: the mode in force), ``threads`` (CPU threads
    of every run) and ``extra_config`` (extra keyword arguments for the train function) are
    part of each run's identity. With the default trainer the task's default model, epochs
    and training recipe are resolved first (see :func:`resolve_task_defaults`); a custom
    ``train_fn`` gets the values as given. ``model_overrides`` set the model's layer slots
    and config fields (``{"norm_layer": "rmsnorm", "mlp_layer": "glu(act='silu')"}``, like
    ``--set model.KEY=VALUE``); they are part of each run's identity and unknown keys fail at
    once. Same as ``run_compare(plan_compare(...), ...)``.
    """
    _check_confidence(confidence)
    plan = plan_compare(
        activations, task=task, model=model, seeds=seeds, epochs=epochs, device=device,
        dtype=dtype, max_steps=max_steps, kernel=kernel, threads=threads,
        extra_config=extra_config, task_defaults=train_fn is None,
        model_overrides=model_overrides,
    )  # fmt: skip
    return run_compare(
        plan, db=db, workers=workers, ray=ray, study=study, train_fn=train_fn, events=events,
        confidence=confidence,
    )  # fmt: skip


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def run_compare(
    plan: ComparePlan,
    *,
    db: str | Path | ResultsStore = DEFAULT_DB,
    workers: int = 1,
    ray: str | None = None,
    wait_busy: bool = False,
    study: str | None = None,
    train_fn: TrainRef = None,
    events: MatrixEvents | None = None,
    confidence: float = 0.95,
) -> CompareResult:
    """Run (or resume) a planned comparison (:func:`plan_compare`) and summarise it.

    ``workers`` local processes or ``ray`` (a Ray address) train the runs; ``wait_busy``
    waits for runs claimed by another process (see :func:`~actlab.bench.runner.run_matrix`).
    """
    _check_confidence(confidence)
    specs, config, task = plan.specs, plan.study_config, plan.task
    arms = plan.arms
    first = specs[0]
    name = study or default_study_name(task, first.model, arms, config_hash(config))
    store = db if isinstance(db, ResultsStore) else ResultsStore(db)
    try:
        store.save_study(
            name,
            task=task,
            model=first.model,
            activations=arms,
            seeds=plan.seeds,
            epochs=first.epochs,
            config=config,
        )
        report = run_matrix(
            specs, store, train_fn=train_fn, workers=workers, ray=ray, wait_busy=wait_busy,
            study=name, events=events,
        )  # fmt: skip
        records = store.records(specs)
        url = store.display_url()
    finally:
        if not isinstance(db, ResultsStore):
            store.close()
    summary = summarize(records, arms, confidence=confidence)
    return CompareResult(name, specs, records, summary, report, url)
