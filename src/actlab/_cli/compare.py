"""``actlab compare A B C ... --task T``: multi-seed comparison with statistics and a report.

Runs the activation x seed matrix (resuming from the results database), prints one row per
activation -- mean ± CI of the test metric and paired tests against the first activation --
and writes a self-contained HTML report. Exit status 1 if some run of the matrix failed.

An ACT may be an *arm* ``[LABEL=]ACT[@model.KEY=VALUE ...]`` with model overrides of its own
(``relu_kan=silu@model.mlp_layer=relu_kan``), so layers compare in one table; the arm's value
wins over ``--set`` for its key (:func:`actlab.bench.plan.parse_arm`).

Every flag is checked before anything is trained or written (:func:`validate`): a bad value
is one line ``actlab compare: error: ...`` and exit status 2. The checks of flags that
``search`` and ``demo`` share live here too (``check_*``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

HELP = "compare activations over several seeds: mean ± CI, paired tests, HTML report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from actlab.bench.plan import DEFAULT_DB  # light: no SQLAlchemy at --help time
    from actlab.train import TASKS

    p.add_argument(
        "activations",
        nargs="+",
        metavar="ACT",
        help="activation specs or formulas in x; the first is the baseline, e.g. gelu "
        "'crrelu(eps=0.02)' 'x*sigmoid(1.702*x)'. An arm [LABEL=]ACT[@model.KEY=VALUE ...] "
        "adds model overrides of its own and names the row, e.g. mlp=silu "
        "'relu_kan=silu@model.mlp_layer=relu_kan' (its overrides win over --set for their "
        "keys; the label defaults to the canonical arm and is not part of the run's key)",
    )
    p.add_argument(
        "--task",
        required=True,
        help=f"one of {', '.join(TASKS.names())}",
    )
    p.add_argument("--model", default=None, help="model of the task (default: the task's own)")
    p.add_argument(
        "--seeds",
        default="3",
        help="number of seeds (0..N-1) or a comma list such as 0,3,7 (default 3)",
    )
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the task's own)")
    p.add_argument(
        "--db",
        default=DEFAULT_DB,
        help=f"results database: file path (SQLite) or SQLAlchemy URL (default {DEFAULT_DB})",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="parallel worker processes; torch threads are split between them",
    )
    p.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="train the runs as Ray tasks: auto (the cluster of `ray start`), "
        "ray://host:port, or local",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for runs another process is training (sharing --db) and take them over "
        "if its heartbeat stops, so this command ends with the whole table",
    )
    p.add_argument(
        "--report", default=None, metavar="HTML", help="report path (default compare-<task>.html)"
    )
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--device", default="cpu", help="torch device for training (default cpu)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64", "bfloat16"],
        help="training dtype (default float32)",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="cap optimizer steps per run (quick smoke tests)",
    )
    add_run_settings(p)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="model.KEY=VALUE",
        help="override the model: a layer slot (model.norm_layer=rmsnorm, "
        "model.mlp_layer=\"glu(act='silu')\", model.attn_score=relu_attn) or a config field "
        "(model.depth=6) of every arm; repeatable, part of each run's key (a wrong key lists "
        "the valid ones); an arm's own @model.KEY=VALUE wins for its key",
    )
    p.add_argument("--study", default=None, help="study name stored with the runs (<= 200 chars)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--train-fn", default=None, help=argparse.SUPPRESS)  # module:function, tests


def add_run_settings(p: argparse.ArgumentParser) -> None:
    """``--kernel`` and ``--threads``: run settings that are part of each run's key (shared
    with ``search``)."""
    from actlab.activations import KERNEL_MODES

    p.add_argument(
        "--kernel",
        default=None,
        choices=list(KERNEL_MODES),
        help="activation kernel mode of every run (default: ACTLAB_KERNEL, else auto); "
        "another mode is another run",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads of every run (default: torch's, split between --workers); "
        "part of the run's key",
    )


# ---------------------------------------------------------------------------- flag checks
MAX_STEPS = 10**9
MAX_STUDY_LEN = 200  # the study column of the results store
WORKERS_PER_CORE = 4


def check_int(flag: str, value: int | None, lo: int, hi: int) -> int | None:
    """``value`` (None passes) must be a whole number in ``lo..hi``."""
    if value is not None and not lo <= value <= hi:
        raise ValueError(f"{flag} must be in {lo}..{hi}, got {value}")
    return value


def check_float(
    flag: str, value: float, *, lo: float, hi: float = math.inf, lo_open: bool = True
) -> float:
    """``value`` must be finite and in ``(lo, hi]`` (``[lo, hi]`` with ``lo_open=False``)."""
    above = value > lo if lo_open else value >= lo
    if not (math.isfinite(value) and above and value <= hi):
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        high = f" and <= {hi:g}" if math.isfinite(hi) else ""
        raise ValueError(f"{flag} must be a finite number {low}{high}, got {value!r}")
    return value


def check_workers(workers: int) -> int:
    """Local worker processes: at least 1, at most ``WORKERS_PER_CORE`` per CPU core."""
    cap = WORKERS_PER_CORE * (os.cpu_count() or 1)
    if not 1 <= workers <= cap:
        raise ValueError(
            f"--workers must be in 1..{cap} ({WORKERS_PER_CORE} per CPU core here), got {workers}"
        )
    return workers


def check_ray(ray: str | None, workers: int) -> None:
    """``--ray ADDRESS``: not empty, and not together with ``--workers``."""
    if ray is None:
        return
    if not ray.strip():
        raise ValueError("--ray needs an address: auto, local or ray://host:port")
    if workers != 1:
        raise ValueError(
            "--workers starts local processes; with --ray the cluster's CPUs set the "
            "parallelism: drop --workers"
        )


def check_device(text: str) -> str:
    """A torch device that exists on this machine, normalised (``"cuda:0"``, ``"cpu"``)."""
    import torch

    try:
        dev = torch.device(text.strip())
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(
            f"--device {text!r} is not a torch device; use cpu, cuda, cuda:1 or mps"
        ) from None
    if dev.type == "cpu":
        return "cpu"  # cpu:0 is the same device (and the same run key)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no GPU visible"
            raise ValueError(
                f"--device {text}: cuda requested but not available (torch "
                f"{torch.__version__}, {build}); use --device cpu"
            )
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(
                f"--device {text}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})"
            )
        return str(dev)
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {text}: mps requested but not available; use --device cpu")
        return str(dev)
    raise ValueError(f"--device {text}: training supports cpu, cuda and mps, not {dev.type!r}")


def check_report(report: str | None, no_report: bool, default: str) -> Path | None:
    """The report path (None with ``--no-report``): an .html file in an existing folder."""
    if no_report:
        if report is not None:
            raise ValueError("--report and --no-report contradict each other; give one")
        return None
    path = Path(report if report is not None else default)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--report {str(path)!r}: the report is HTML; give a path ending in .html")
    if path.is_dir():
        raise ValueError(f"--report {str(path)!r} is a directory; give a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"--report {str(path)!r}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--report {str(path)!r}: folder {str(parent)!r} is not writable")
    return path


def check_study(name: str | None) -> str | None:
    """A study name of at most ``MAX_STUDY_LEN`` printable characters (None: the default)."""
    if name is None:
        return None
    if not name.strip():
        raise ValueError("--study must not be empty; leave it out for the default name")
    if len(name) > MAX_STUDY_LEN or not name.isprintable():
        raise ValueError(
            f"--study must be at most {MAX_STUDY_LEN} printable characters (got {len(name)})"
        )
    return name


def check_threads(threads: int | None) -> int | None:
    """``--threads``: None (torch's default) or 1..cores."""
    return check_int("--threads", threads, 1, os.cpu_count() or 1)


def validate(args: argparse.Namespace) -> Any:
    """Check every flag (see the module docstring); returns the checked plan
    (:class:`~actlab.bench.comparison.ComparePlan`), which :func:`run` runs as it is.

    Normalises ``args.device`` and ``args.report`` (a path or None); bare formulas become
    ``expr(formula=...)`` in the plan. Reads nothing from the results database and writes
    nothing.
    """
    from actlab.bench.comparison import plan_compare
    from actlab.bench.plan import MAX_EPOCHS, parse_set_overrides

    check_workers(args.workers)
    check_ray(args.ray, args.workers)
    check_int("--epochs", args.epochs, 1, MAX_EPOCHS)
    check_int("--max-steps", args.max_steps, 1, MAX_STEPS)
    check_threads(args.threads)
    args.device = check_device(args.device)
    check_study(args.study)
    if not args.db or not str(args.db).strip():
        raise ValueError("--db must name a file or an SQLAlchemy URL")
    # formulas, then task and model (an unknown task names every task), then the matrix
    plan = plan_compare(
        args.activations, task=args.task, model=args.model, seeds=args.seeds,
        epochs=args.epochs, device=args.device, dtype=args.dtype, max_steps=args.max_steps,
        kernel=args.kernel, threads=args.threads, task_defaults=args.train_fn is None,
        model_overrides=parse_set_overrides(args.overrides),
    )  # fmt: skip
    args.report = check_report(args.report, args.no_report, f"compare-{args.task}.html")
    return plan


def _events(show_bar: bool) -> Any:
    from actlab.bench.runner import MatrixEvents

    class RichEvents(_RichEvents, MatrixEvents):
        pass

    return RichEvents(show_bar)


class _RichEvents:
    """Progress bar on stderr plus one line per finished run."""

    def __init__(self, show_bar: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.show_bar = show_bar
        self.progress: Any = None
        self.task: Any = None

    def matrix_started(self, to_run: int, already_finished: int) -> None:
        if already_finished:
            self.console.print(
                f"resuming: {already_finished} runs already finished in the database"
            )
        if to_run and self.show_bar:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
            )  # fmt: skip
            self.progress.start()
            self.task = self.progress.add_task("runs", total=to_run)

    def run_started(self, spec: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=f"training {spec.label()}")

    def run_finished(self, rec: Any, done: int, to_run: int) -> None:
        from rich.markup import escape

        if rec.ok:
            line = (
                f"[green]✓[/] {escape(rec.spec.label())}  {rec.metric_name}={rec.metric_value:.4f}"
            )
            if rec.seconds is not None:
                line += f"  ({rec.seconds:.1f} s)"
        else:
            err = (rec.error or "no metric").strip().splitlines()[0]
            line = f"[red]✗[/] {escape(rec.spec.label())}  {escape(err)}"
        self.console.print(f"[{done}/{to_run}] {line}")
        if self.progress is not None:
            self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _print_table(result: Any) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from actlab.report.table import summary_table, table_note

    header = "arm" if result.labelled else "activation"
    headers, rows = summary_table(result.summary, row_header=header)
    first = result.specs[0]
    title = f"{first.task} / {first.model}: final {result.summary.metric_name}"
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for i, h in enumerate(headers):
        left = i == 0 or i >= len(headers) - 2
        table.add_column(h, justify="left" if left else "right", no_wrap=i in (0, 2, 3))
    styles = {"better": "green", "worse": "red"}
    for s, cells in zip(result.summary.rows, rows, strict=True):
        table.add_row(*cells, style=styles.get(s.verdict))
    console = Console(width=None if sys.stdout.isatty() else 120)  # logs: don't squeeze
    console.print(table)
    console.print(table_note(result.summary), style="dim")


def run(args: argparse.Namespace) -> int:
    from actlab.bench.comparison import run_compare

    plan = validate(args)  # every flag, before touching the database or starting anything
    events = _events(show_bar=not args.no_progress and sys.stderr.isatty())
    t0 = time.perf_counter()
    try:  # the checked plan runs as it is: nothing is validated twice
        result = run_compare(
            plan,
            db=args.db,
            workers=args.workers,
            ray=args.ray,
            wait_busy=args.wait,
            study=args.study,
            train_fn=args.train_fn,
            events=events,
        )
    finally:
        events.close()
    _print_table(result)
    failed = [r for r in result.records if not r.ok]
    missing = result.missing
    if failed:
        events.console.print(f"[red]{len(failed)} run(s) failed or diverged[/]; rerun the same "
                             "command to retry failed runs (finished ones are kept)")  # fmt: skip
    if missing:
        events.console.print(f"{len(missing)} run(s) are being trained by another process; "
                             "rerun later to include them")  # fmt: skip
    if args.report is not None:
        from actlab.report import write_report

        path = write_report(result, args.report)
        events.console.print(f"report: {path}")
    events.console.print(
        f"{len(result.report.records)} run(s) trained now, {len(result.report.skipped)} reused "
        f"from {result.db_url} in {time.perf_counter() - t0:.1f} s"
    )
    return 1 if failed or missing else 0
