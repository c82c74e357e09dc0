"""``actlab search``: a resumable activation search, re-evaluation and HTML report.

With no arguments it runs a complete small search on the embedded digits task (sklearn
digits, MLP) in about 10 minutes: 8 minutes of EAFO-guided evolution warm-started from
relu/gelu/swish/crrelu, with cheap checks, the cost filter and a quality floor before
3-epoch trainings, then the top 3 formulas re-trained for the full 20 epochs with 5 fresh
seeds against gelu, relu and crrelu, and a report. No intermediate funnel level by default
on digits: benchmarks/bench_search.py measured that an 8-epoch level there is saturated
(~0.98 for most valid candidates on 359 validation images) and picked worse than the
3-epoch level alone; the fresh-seed re-evaluation is the last, decisive stage. Use
``--funnel 3,8,20`` to add levels. Rerunning the
same command (same ``--study``) resumes: nothing finished is redone, and a finished search
only re-reads its results.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

HELP = "search for activation functions: evolution / EAFO / BO, resumable studies, report"

_DEFAULT_FUNNEL = {"digits-mlp": "3"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="digits-mlp",
                   help="training task (digits-mlp, fashion-mnist, ...) or curve:SPEC, a toy "
                        "objective matching SPEC's curve without training (default digits-mlp)")
    p.add_argument("--model", default=None, help="model of the task (default: the task's own)")
    p.add_argument("--budget", default="8m",
                   help="evaluations (e.g. 200; one = one training at the first funnel budget) "
                        "or a time such as 10m, 1h (default 8m)")
    p.add_argument("--strategy", default="eafo", choices=["random", "evolution", "eafo", "bo"],
                   help="search strategy (default eafo: evolution + EAFO correction mutations)")
    p.add_argument("--form", default=None, help="formula whose constants --strategy bo optimises")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "gp"], help="BO sampler (default tpe)")
    p.add_argument("--study", default=None, help="study name; reuse it to resume (default "
                                                  "<task>-<strategy>-s<seed>)")
    p.add_argument("--storage", default=None,
                   help="study storage: SQLite file (default actlab-search.db), *.journal file "
                        "for many local processes, or an SQLAlchemy URL")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run evaluations as Ray tasks: auto, ray://host:port, or local")
    p.add_argument("--seed", type=int, default=0, help="search seed; also the training seed of "
                                                       "every candidate during the search")
    p.add_argument("--funnel", default=None,
                   help="comma list of training budgets (epochs) per funnel level, e.g. 3,8,20 "
                        "(default: 3 on digits-mlp, else the task's epochs)")
    p.add_argument("--top-seeds", type=int, default=1,
                   help="training runs averaged per evaluation at the last funnel level (with --funnel; "
                        "default 1): ranks the finalists on a mean instead of one noisy run")
    p.add_argument("--keep", type=float, default=0.1,
                   help="fraction of each funnel level promoted to the next (default 0.1)")
    p.add_argument("--floor", default="auto",
                   help="quality floor VALUE@EPOCHS (EvoNorm), e.g. 0.3@1; 'none' to disable "
                        "(default: 0.2@1 for accuracy tasks)")
    p.add_argument("--max-nodes", type=int, default=40,
                   help="reject formulas with more nodes than this (default 40)")
    p.add_argument("--max-cost", type=float, default=8.0,
                   help="reject candidates slower than this many times GELU per step (default 8)")
    p.add_argument("--max-steps", type=int, default=None, help="cap optimizer steps per training")
    p.add_argument("--top", type=int, default=3, help="candidates re-evaluated at the end (default 3)")
    p.add_argument("--final-seeds", type=int, default=5, help="fresh seeds of the re-evaluation")
    p.add_argument("--no-final", action="store_true", help="skip the re-evaluation")
    p.add_argument("--db", default=None, help="results database of the re-evaluation "
                                              "(default: that of actlab compare)")
    p.add_argument("--report", default=None, metavar="HTML",
                   help="report path (default search-<study>.html)")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--quiet", action="store_true", help="no line per evaluation")


def _floor(text: str, task: str) -> Any:
    from actlab.search import QualityFloor

    t = text.strip().lower()
    if t == "none":
        return None
    if t == "auto":
        return None if task.startswith("curve:") or task.endswith("-char") else QualityFloor(0.2, 1.0)
    value, _, after = t.partition("@")
    try:
        return QualityFloor(float(value), float(after or 1))
    except ValueError:
        raise ValueError(f"--floor must be VALUE@EPOCHS such as 0.3@1, or none; got {text!r}") from None


def _levels(text: str | None, task: str) -> tuple[float, ...] | None:
    spec = text or _DEFAULT_FUNNEL.get(task)
    if spec is None:
        return None
    try:
        return tuple(float(x) for x in spec.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--funnel must be a comma list of budgets such as 3,8,20; got {spec!r}") from None


class _Printer:
    def __init__(self, budget: Any, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 140)
        self.budget, self.quiet = budget, quiet

    def __call__(self, ev: Any) -> None:
        from rich.markup import escape

        if self.quiet:
            return
        r, c = ev.result, ev.candidate
        f = c.formula if len(c.formula) <= 70 else c.formula[:67] + "..."
        units = f"{ev.units:.0f}/{self.budget.units:g}" if self.budget.units else f"{ev.units:.0f}"
        if r.ok:
            cost = f" {r.cost:.1f}x" if r.cost == r.cost else ""
            self.console.print(f"[{units}] #{ev.number} L{c.level} [green]{r.quality:.4f}[/] "
                               f"best {ev.best:.4f}{cost}  {escape(f)}  [dim]{escape(c.origin)}[/]")
        else:
            why = r.reason if len(r.reason) <= 60 else r.reason[:57] + "..."
            self.console.print(f"[dim][{units}] #{ev.number} L{c.level} ✗ {r.stage}: {escape(why)}  "
                               f"{escape(f)}[/]")


def _summary(console: Any, res: Any) -> None:
    from rich.markup import escape

    c = res.counts()
    console.print(f"\nstudy {res.study!r} ({res.storage}): {c['trials']} trials, {c['ok']} ok, "
                  f"{c['rejected']} rejected, {c['failed']} failed, {c['promotions']} promotions; "
                  f"{res.duplicates} duplicates skipped; stopped: {res.stopped}")
    console.print(f"units spent {res.units_spent():.1f}; {100 * res.wasted_fraction():.1f}% on "
                  f"candidates rejected after training started")
    for k, v in res.rejections().items():
        console.print(f"  {k}: {v}")
    console.print("best candidates (highest funnel level, then validation score):")
    for r in res.ranked()[:5]:
        console.print(f"  L{r.candidate.level} {r.result.quality:.4f}  cost {r.result.cost:.2f}x  "
                      f"{escape(r.candidate.formula)}")


def _final_table(console: Any, final: Any) -> None:
    if final.note:
        console.print(final.note)
    if final.comparison is None:
        for k, v in sorted(final.scores.items(), key=lambda kv: -kv[1]):
            console.print(f"  {v:.6f}  {k}")
        return
    from rich import box
    from rich.table import Table

    from actlab.report.table import summary_table, table_note

    headers, rows = summary_table(final.comparison.summary)
    table = Table(title="re-evaluation with fresh seeds (test metric)", box=box.SIMPLE_HEAD)
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(table_note(final.comparison.summary), style="dim")


def run(args: argparse.Namespace) -> int:
    from actlab.search import (
        CostFilter,
        Pipeline,
        finalize,
        make_objective,
        parse_budget,
        run_search,
    )
    from actlab.search._report import write_search_report

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    budget = parse_budget(args.budget)
    kw: dict[str, Any] = {}
    if not args.task.startswith("curve:"):
        kw = {"model": args.model, "record_density": args.strategy == "eafo",
              "overrides": {"max_steps": args.max_steps} if args.max_steps else {}}
    objective = make_objective(args.task, **kw)
    pipeline = Pipeline(cost=CostFilter(args.max_cost), floor=_floor(args.floor, args.task),
                        budgets=_levels(args.funnel, objective.task), max_nodes=args.max_nodes,
                        top_seeds=args.top_seeds)
    if args.top_seeds > 1 and len(pipeline.levels(objective)) < 2:
        raise ValueError("--top-seeds averages runs at the last level of a funnel of two or more levels; "
                         "add --funnel (e.g. --funnel 3,8)")
    printer = _Printer(budget, args.quiet)
    console = printer.console
    console.print(f"actlab search: task {objective.task}, strategy {args.strategy}, budget {budget}, "
                  f"funnel {pipeline.levels(objective)}, seed {args.seed}")
    t0 = time.perf_counter()
    res = run_search(objective, args.strategy, budget=budget, study=args.study, storage=args.storage,
                     pipeline=pipeline, workers=args.workers, ray=args.ray, seed=args.seed,
                     form=args.form, keep=args.keep, on_result=printer)
    _summary(console, res)
    final = None
    if not args.no_final:
        console.print(f"\nre-evaluating the top {args.top} against gelu, relu, crrelu "
                      f"({args.final_seeds} fresh seeds)...")
        final = finalize(res, top=args.top, seeds=args.final_seeds, db=args.db, workers=args.workers,
                         objective=objective)
        _final_table(console, final)
    if not args.no_report:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in res.study)
        path = write_search_report(res, args.report or f"search-{safe}.html", final)
        console.print(f"report: {path}")
    console.print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0
