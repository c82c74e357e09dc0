"""``actlab compare A B C ... --task T``: multi-seed comparison with statistics and a report.

Runs the activation x seed matrix (resuming from the results database), prints one row per
activation -- mean ± CI of the test metric and paired tests against the first activation --
and writes a self-contained HTML report. Exit status 1 if some run of the matrix failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

HELP = "compare activations over several seeds: mean ± CI, paired tests, HTML report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from actlab.bench.plan import DEFAULT_DB  # light: no SQLAlchemy at --help time

    p.add_argument(
        "activations",
        nargs="+",
        metavar="ACT",
        help="activation specs; the first is the baseline, e.g. gelu 'crrelu(eps=0.02)'",
    )
    p.add_argument(
        "--task",
        required=True,
        help="e.g. digits-mlp, fashion-mnist, cifar10, shakespeare-char (a wrong name lists all)",
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
    p.add_argument("--study", default=None, help="study name stored with the runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--train-fn", default=None, help=argparse.SUPPRESS)  # module:function, tests


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

    headers, rows = summary_table(result.summary)
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
    from actlab.bench.comparison import compare
    from actlab.bench.plan import plan_runs

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    # validate specs and seeds before touching the database or starting anything
    plan_runs(args.activations, args.seeds, task=args.task, epochs=args.epochs)
    events = _events(show_bar=not args.no_progress and sys.stderr.isatty())
    t0 = time.perf_counter()
    try:
        result = compare(
            args.activations,
            task=args.task,
            model=args.model,
            seeds=args.seeds,
            epochs=args.epochs,
            db=args.db,
            workers=args.workers,
            device=args.device,
            dtype=args.dtype,
            max_steps=args.max_steps,
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
    if not args.no_report:
        from actlab.report.html import write_report

        path = write_report(result, args.report or f"compare-{args.task}.html")
        events.console.print(f"report: {path}")
    events.console.print(
        f"{len(result.report.records)} run(s) trained now, {len(result.report.skipped)} reused "
        f"from {result.db_url} in {time.perf_counter() - t0:.1f} s"
    )
    return 1 if failed or missing else 0
