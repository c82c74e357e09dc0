"""``compare``: plan the matrix, run what is missing, summarise what is stored.

    from actlab.bench import compare
    res = compare(["gelu", "crrelu"], task="digits-mlp", seeds=5, epochs=3)
    for row in res.summary.rows:
        print(row.activation, row.mean, row.ci, row.t_p_holm, row.mark)

Rerunning the same call resumes: finished runs are read back from the store, only missing
or failed ones are trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actlab.bench.plan import MAX_EPOCHS, RunSpec, config_hash, parse_seeds, plan_runs
from actlab.bench.runner import MatrixEvents, MatrixReport, TrainRef, run_matrix
from actlab.bench.store import DEFAULT_DB, ResultsStore, RunRecord
from actlab.bench.summary import CompareSummary, summarize

__all__ = ["CompareResult", "compare", "default_study_name", "resolve_task_defaults"]


@dataclass
class CompareResult:
    """Everything a comparison produced: table, stored records, what ran now."""

    study: str
    specs: list[RunSpec]
    records: list[RunRecord]  # every stored record of the matrix (this call or earlier)
    summary: CompareSummary
    report: MatrixReport
    db_url: str

    @property
    def activations(self) -> list[str]:
        return list(dict.fromkeys(s.activation for s in self.specs))

    @property
    def missing(self) -> list[RunSpec]:
        """Runs of the matrix with no stored record (e.g. still running elsewhere)."""
        have = {r.spec for r in self.records}
        return [s for s in self.specs if s not in have]


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


def compare(
    activations: Sequence[str],
    *,
    task: str,
    model: str | None = None,
    seeds: int | str | Sequence[int] = 3,
    epochs: int | None = None,
    db: str | Path | ResultsStore = DEFAULT_DB,
    workers: int = 1,
    device: str = "cpu",
    dtype: str = "float32",
    max_steps: int | None = None,
    study: str | None = None,
    train_fn: TrainRef = None,
    events: MatrixEvents | None = None,
    confidence: float = 0.95,
    extra_config: dict[str, Any] | None = None,
) -> CompareResult:
    """Run (or resume) the activation x seed matrix and summarise it.

    ``activations[0]`` is the baseline of the paired tests. ``seeds`` is a count (seeds
    ``0..n-1``) or explicit seeds. ``device``, ``dtype``, ``max_steps`` and ``extra_config``
    (extra keyword arguments for the train function) are part of each run's identity. With
    the default trainer the task's default model, epochs and training recipe are resolved
    first (see :func:`resolve_task_defaults`); a custom ``train_fn`` gets the values as given.
    """
    if epochs is not None and (isinstance(epochs, bool) or not 1 <= epochs <= MAX_EPOCHS):
        raise ValueError(f"epochs must be in 1..{MAX_EPOCHS} (None: the task's own), got {epochs}")
    if max_steps is not None and (
        isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1
    ):
        raise ValueError(f"max_steps must be a whole number >= 1 (or None), got {max_steps}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    config: dict[str, Any] = {"device": device, "dtype": dtype, **(extra_config or {})}
    if max_steps is not None:
        config["max_steps"] = int(max_steps)
    if train_fn is None:
        model, epochs, config["_task_defaults"] = resolve_task_defaults(task, model, epochs)
    seed_list = parse_seeds(seeds)
    specs = plan_runs(activations, seed_list, task=task, model=model, epochs=epochs, config=config)
    acts = list(dict.fromkeys(s.activation for s in specs))
    first = specs[0]
    name = study or default_study_name(task, first.model, acts, config_hash(config))
    store = db if isinstance(db, ResultsStore) else ResultsStore(db)
    try:
        store.save_study(
            name,
            task=task,
            model=first.model,
            activations=acts,
            seeds=seed_list,
            epochs=first.epochs,
            config=config,
        )
        report = run_matrix(
            specs, store, train_fn=train_fn, workers=workers, study=name, events=events
        )
        records = store.records(specs)
        url = store.display_url()
    finally:
        if not isinstance(db, ResultsStore):
            store.close()
    summary = summarize(records, acts, confidence=confidence)
    return CompareResult(name, specs, records, summary, report, url)
