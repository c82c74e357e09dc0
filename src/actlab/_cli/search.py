"""``actlab search``: a resumable activation search, re-evaluation and HTML report.

With no arguments it runs a complete small search on the embedded function-fitting task
``fit-exp-sin`` (exp(sin(pi x) + y^2) on [-1, 1]^2, 1000 generated points, the one-block
``fit_net``; test RMSE, lower is better) in about 10 minutes: 8 minutes of EAFO-guided
evolution warm-started from relu/gelu/swish/crrelu, with cheap checks, EAFO's shape checks
and the cost filter before each training, then the top 3 formulas re-trained with 5 fresh
seeds against gelu, relu and crrelu, a plain-words verdict and a report. Chosen by
measurement (benchmarks/default_task_signal.py, 5 fresh seeds): on the former default,
digits-mlp, no pair of baselines differs (every paired p >= 0.07, ~0.974 accuracy for all),
and deep narrow digits MLPs are dominated by seed noise; on fit-exp-sin crrelu beats gelu and
relu at Holm p < 0.02, and fit-bessel's baselines all sit at the RMSE of predicting the mean.
digits-mlp stays available (``--task digits-mlp``: 3-epoch search trainings, no intermediate
funnel level: benchmarks/bench_search.py measured an 8-epoch level saturated there). Use
``--funnel`` to add levels. Rerunning the same command (same ``--study``) resumes: nothing
finished is redone, and a finished search only re-reads its results.

Every flag is checked before the study is opened or anything is evaluated (:func:`validate`):
a bad value or a contradictory combination is one line ``actlab search: error: ...``, exit
status 2. A search that ends without any successful candidate (e.g. its space yields nothing
trainable: every candidate rejected before training) says why on stderr, exit status 1.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

HELP = "search for activation functions: evolution / EAFO / BO, resumable studies, report"

DEFAULT_TASK = "fit-exp-sin"  # embedded, separates the baselines: see the module docstring
_DEFAULT_FUNNEL = {"digits-mlp": "3"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from actlab.search import STRATEGIES
    from actlab.train import TASKS

    p.add_argument(
        "--task",
        default=DEFAULT_TASK,
        help=f"training task ({', '.join(TASKS.names())}) or curve:SPEC, a toy "
        f"objective matching SPEC's curve without training (default {DEFAULT_TASK})",
    )
    p.add_argument("--model", default=None, help="model of the task (default: the task's own)")
    p.add_argument(
        "--budget",
        default="8m",
        help="evaluations (e.g. 200; one = one training at the first funnel budget) "
        "or a time such as 10m, 1h (default 8m)",
    )
    p.add_argument(
        "--strategy",
        default="eafo",
        choices=STRATEGIES.names(),
        help="search strategy (default eafo: evolution + EAFO correction mutations)",
    )
    p.add_argument("--form", default=None, help="formula whose constants --strategy bo optimises")
    p.add_argument(
        "--sampler",
        default=None,
        choices=["tpe", "gp"],
        help="BO sampler of --strategy bo (default tpe)",
    )
    p.add_argument(
        "--study",
        default=None,
        help="study name; reuse it to resume (default <task>-<strategy>-s<seed>)",
    )
    p.add_argument(
        "--storage",
        default=None,
        help="study storage: SQLite file (default actlab-search.db), *.journal file "
        "for many local processes, or an SQLAlchemy URL",
    )
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run evaluations as Ray tasks: auto, ray://host:port, or local",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="search seed; also the training seed of every candidate during the search",
    )
    p.add_argument(
        "--funnel",
        default=None,
        help="comma list of training budgets (epochs) per funnel level, e.g. 3,8,20 "
        "(default: 3 on digits-mlp, else the task's epochs)",
    )
    p.add_argument(
        "--top-seeds",
        type=int,
        default=1,
        help="training runs averaged per evaluation at the last funnel level (with --funnel; "
        "default 1): ranks the finalists on a mean instead of one noisy run",
    )
    p.add_argument(
        "--keep",
        type=float,
        default=None,
        help="fraction of each funnel level promoted to the next (default 0.1)",
    )
    p.add_argument(
        "--floor",
        default="auto",
        help="quality floor VALUE@EPOCHS (EvoNorm), e.g. 0.3@1; 'none' to disable "
        "(default: 0.2@1 for accuracy tasks)",
    )
    p.add_argument(
        "--max-nodes",
        type=int,
        default=40,
        help="reject formulas with more nodes than this (default 40)",
    )
    p.add_argument(
        "--max-cost",
        type=float,
        default=8.0,
        help="reject candidates slower than this many times GELU per step (default 8)",
    )
    p.add_argument("--max-steps", type=int, default=None, help="cap optimizer steps per training")
    from actlab._cli.compare import add_run_settings

    add_run_settings(p)  # --kernel, --threads: of every training, and what the cost filter times
    p.add_argument(
        "--top", type=int, default=None, help="candidates re-evaluated at the end (default 3)"
    )
    p.add_argument(
        "--final-seeds", type=int, default=None, help="fresh seeds of the re-evaluation (default 5)"
    )
    p.add_argument("--no-final", action="store_true", help="skip the re-evaluation")
    p.add_argument(
        "--db",
        default=None,
        help="results database of the re-evaluation (default: that of actlab compare)",
    )
    p.add_argument(
        "--report", default=None, metavar="HTML", help="report path (default search-<study>.html)"
    )
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument(
        "--transfer",
        default=None,
        metavar="TASK",
        help="also re-evaluate the finalists and baselines on TASK (its default model and "
        "recipe, same fresh seeds); the report shows both",
    )
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument(
        "--verbose", action="store_true", help="one line per evaluation (besides the progress)"
    )
    g = p.add_argument_group(
        "shape checks (EAFO's boundary conditions, before training; on by default)"
    )
    g.add_argument("--no-shape", action="store_true", help="skip the shape checks")
    g.add_argument(
        "--shape-negative",
        default=None,
        choices=["bounded", "linear", "any"],
        help="required behaviour as x -> -inf (default bounded; linear allows leaky shapes)",
    )
    g.add_argument(
        "--shape-range",
        type=float,
        default=None,
        metavar="R",
        help="input range [-R, R] free of poles and flat gradients (default 8)",
    )
    g.add_argument(
        "--shape-monotone", action="store_true", help="require f non-decreasing on [-R, R]"
    )
    g.add_argument(
        "--shape-f0",
        default=None,
        choices=["zero", "positive", "negative", "nonnegative", "nonpositive"],
        help="require this sign of f(0)",
    )


def _floor(text: str, task: str, objective: Any = None) -> Any:
    from actlab.search import QualityFloor

    t = text.strip().lower()
    if t == "none":
        return None
    if t == "auto":  # a floor of 0.2 means something for accuracies only (not bpc or rmse)
        metric = getattr(objective, "metric", None)
        if task.startswith("curve:") or task.endswith("-char") or metric not in (None, "accuracy"):
            return None
        return QualityFloor(0.2, 1.0)
    value, _, after = t.partition("@")
    try:
        v, a = float(value), float(after or 1)
    except ValueError:
        raise ValueError(
            f"--floor must be VALUE@EPOCHS such as 0.3@1, or none; got {text!r}"
        ) from None
    if not (math.isfinite(v) and math.isfinite(a) and a > 0):
        raise ValueError(
            f"--floor {text}: VALUE must be finite and EPOCHS a finite number > 0, e.g. 0.3@1"
        )
    if getattr(objective, "metric", "") == "accuracy" and not 0 <= v <= 1:
        raise ValueError(f"--floor {text}: an accuracy floor is in 0..1, e.g. 0.3@1")
    return QualityFloor(v, a)


def _shape(args: argparse.Namespace) -> Any:
    """The shape checks of the flags (None with --no-shape); bad values fail in one line."""
    from actlab.search import ShapeChecks

    if args.no_shape:
        return None
    kw: dict[str, Any] = {"monotone": bool(args.shape_monotone), "f0": args.shape_f0}
    if args.shape_negative is not None:
        kw["negative"] = args.shape_negative
    if args.shape_range is not None:
        r = args.shape_range
        if not (math.isfinite(r) and 1e-3 <= r <= 1e4):
            raise ValueError(f"--shape-range must be a number in [0.001, 10000], got {r:g}")
        kw["input_range"] = r
    return ShapeChecks(**kw)


def _levels(text: str | None, task: str) -> tuple[float, ...] | None:
    from actlab.bench.plan import MAX_EPOCHS

    spec = text or _DEFAULT_FUNNEL.get(task)
    if spec is None:
        return None
    try:
        levels = tuple(float(x) for x in spec.split(",") if x.strip())
    except ValueError:
        raise ValueError(
            f"--funnel must be a comma list of budgets such as 3,8,20; got {spec!r}"
        ) from None
    if not levels:
        raise ValueError(f"--funnel must be a comma list of budgets such as 3,8,20; got {spec!r}")
    for x in levels:
        if not (math.isfinite(x) and 0 < x <= MAX_EPOCHS):
            raise ValueError(
                f"--funnel {spec}: every budget must be a finite number in "
                f"(0, {MAX_EPOCHS}], got {x:g}"
            )
    if any(b < a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"--funnel {spec}: budgets must not decrease, e.g. 3,8,20")
    return levels


_TOP_MAX = 100


def _refuse_given(flags: list[tuple[str, object]], verbs: tuple[str, str], tail: str) -> None:
    """One line naming the flags given (value not None) that do not apply here."""
    given = [f for f, v in flags if v is not None]
    if given:
        verb = verbs[0] if len(given) == 1 else verbs[1]
        raise ValueError(f"{', '.join(given)} {verb} {tail}")


def validate(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Check every flag and combination before anything is opened or evaluated; returns
    ``(budget, objective, pipeline)``. Fills the defaults of ``--top``, ``--final-seeds``,
    ``--keep`` and ``--sampler``; ``args.report`` becomes a checked path or None."""
    from actlab._cli.compare import (
        MAX_STEPS,
        check_float,
        check_int,
        check_ray,
        check_report,
        check_study,
        check_threads,
        check_workers,
    )
    from actlab.bench.plan import MAX_RUNS, MAX_SEED, MAX_SEEDS
    from actlab.expr import ExprError
    from actlab.search import (
        MAX_TOP_SEEDS,
        STRATEGIES,
        CostFilter,
        Pipeline,
        form_constants,
        make_objective,
        parse_budget,
    )

    curve = args.task.strip().startswith("curve:")
    # combinations first: they need no work at all
    formed = "/".join(STRATEGIES.names(form=True))  # they optimise the constants of --form
    uses_form = bool(STRATEGIES.meta(args.strategy).get("form"))
    if args.form is not None and not uses_form:
        raise ValueError(
            f"--form is the formula of --strategy {formed}; drop it or add "
            f"--strategy {formed} (--strategy is {args.strategy})"
        )
    if args.sampler is not None and not uses_form:
        raise ValueError(
            f"--sampler chooses the sampler of --strategy {formed}; drop it or add "
            f"--strategy {formed}"
        )
    if args.no_final:
        _refuse_given(
            [("--top", args.top), ("--final-seeds", args.final_seeds), ("--db", args.db)],
            ("configures", "configure"),
            "the re-evaluation, which --no-final skips",
        )
    if curve:
        _refuse_given(
            [
                ("--model", args.model),
                ("--max-steps", args.max_steps),
                ("--db", args.db),
                ("--threads", args.threads),
            ],
            ("applies", "apply"),
            "to training tasks; a curve: task trains nothing",
        )
    if args.no_shape:
        _refuse_given(
            [
                ("--shape-negative", args.shape_negative),
                ("--shape-range", args.shape_range),
                ("--shape-monotone", args.shape_monotone or None),
                ("--shape-f0", args.shape_f0),
            ],
            ("configures", "configure"),
            "the shape checks, which --no-shape skips",
        )
    if args.transfer is not None:
        if args.no_final:
            raise ValueError(
                "--transfer re-evaluates the finalists on a second task; drop --no-final "
                "or --transfer"
            )
        if curve or args.transfer.strip().startswith("curve:"):
            raise ValueError(
                "--transfer needs training tasks on both sides; a curve: task trains nothing"
            )
        from actlab.train import get_task

        args.transfer = get_task(args.transfer.strip()).name  # unknown: close matches
    check_ray(args.ray, args.workers)  # shared with compare --ray
    # values
    budget = parse_budget(args.budget)
    check_workers(args.workers)
    check_int("--seed", args.seed, 0, MAX_SEED)
    check_int("--top-seeds", args.top_seeds, 1, MAX_TOP_SEEDS)
    check_int("--max-nodes", args.max_nodes, 1, 256)
    check_float("--max-cost", args.max_cost, lo=0.0)
    check_int("--max-steps", args.max_steps, 1, MAX_STEPS)
    check_threads(args.threads)
    args.top = check_int("--top", args.top, 1, _TOP_MAX) or 3
    args.final_seeds = check_int("--final-seeds", args.final_seeds, 1, MAX_SEEDS) or 5
    if not args.no_final and not curve and (args.top + 3) * args.final_seeds > MAX_RUNS:
        raise ValueError(
            f"--top {args.top} x --final-seeds {args.final_seeds} is more than "
            f"{MAX_RUNS} re-evaluation runs"
        )
    check_study(args.study)
    for flag, v in (("--storage", args.storage), ("--db", args.db)):
        if v is not None and not v.strip():
            raise ValueError(f"{flag} must name a file or an SQLAlchemy URL")
    report = check_report(args.report, args.no_report, "search.html")
    args.report = report if args.report is not None else None
    if uses_form:
        if not args.form:
            raise ValueError(
                f"strategy {args.strategy!r} optimises the constants of a formula: "
                "give one, e.g. --form 'x*sigmoid(1.702*x)'"
            )
        try:
            constants = form_constants(args.form)
        except (ExprError, RecursionError) as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". Write a")[0]
            raise ValueError(
                f"--form {args.form!r} is not a formula in x ({why}); "
                "e.g. --form 'x*sigmoid(1.702*x)'"
            ) from None
        if not constants:
            raise ValueError(
                f"--form {args.form!r} has no numeric constant for {args.strategy} "
                "to optimise; "
                "e.g. --form 'x*sigmoid(1.702*x)'"
            )
    args.sampler = args.sampler or "tpe"
    # the objective: task, model and the target curve resolved here, not in every evaluation
    kw: dict[str, Any] = {}
    if not curve:
        from actlab.train import get_task

        get_task(args.task).resolve_model(args.model)
        density = bool(STRATEGIES.meta(args.strategy).get("density"))
        kw = {
            "model": args.model,
            "record_density": density,
            "overrides": {"max_steps": args.max_steps} if args.max_steps else {},
            "threads": args.threads,
        }
    objective = make_objective(args.task.strip(), kernel=args.kernel, **kw)  # --kernel checked
    levels = _levels(args.funnel, objective.task)
    n_levels = len(levels) if levels is not None else 1
    if args.keep is not None:
        check_float("--keep", args.keep, lo=0.0, hi=1.0)
        if n_levels < 2:
            raise ValueError(
                "--keep is the fraction promoted between funnel levels; add a funnel "
                "of two or more levels (e.g. --funnel 3,8) or drop --keep"
            )
    args.keep = args.keep if args.keep is not None else 0.1
    if args.top_seeds > 1 and n_levels < 2:
        raise ValueError(
            "--top-seeds averages runs at the last level of a funnel of two or more levels; "
            "add --funnel (e.g. --funnel 3,8)"
        )
    pipeline = Pipeline(
        shape=_shape(args),
        cost=CostFilter(args.max_cost),
        floor=_floor(args.floor, objective.task, objective),
        budgets=levels,
        max_nodes=args.max_nodes,
        top_seeds=args.top_seeds,
    )
    return budget, objective, pipeline


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 140)


def _summary(console: Any, res: Any) -> None:
    from rich.markup import escape

    c = res.counts()
    console.print(
        f"\nstudy {res.study!r} ({res.storage}): {c['trials']} trials, {c['ok']} ok, "
        f"{c['rejected']} rejected, {c['failed']} failed, {c['promotions']} promotions; "
        f"{res.duplicates} duplicates skipped; stopped: {res.stopped}"
    )
    if res.message:
        console.print(f"[yellow]{escape(res.message)}[/]")
    console.print(
        f"units spent {res.units_spent():.1f}; {100 * res.wasted_fraction():.1f}% on "
        f"candidates rejected after training started"
    )
    for k, v in res.rejections().items():
        console.print(f"  {k}: {v}")
    console.print("best candidates (highest funnel level, then validation score):")
    for r in res.ranked()[:5]:
        console.print(
            f"  L{r.candidate.level} {r.result.quality:.4f}  cost {r.result.cost:.2f}x  "
            f"{escape(r.candidate.formula)}"
        )


def _final_table(console: Any, final: Any) -> None:
    from rich.markup import escape

    if final.note:
        console.print(final.note)
    if final.comparison is None:
        for k, v in sorted(final.scores.items(), key=lambda kv: -kv[1]):
            console.print(f"  {v:.6f}  {k}")
        return
    _compare_table(console, final.comparison, "re-evaluation with fresh seeds (test metric)")
    if final.transfer is not None:
        _compare_table(
            console, final.transfer, f"transfer to {final.transfer_task} (same fresh seeds)"
        )
    for title, v in (("search task", final.verdict), ("transfer", final.transfer_verdict)):
        if v is not None:
            console.print(f"\n[bold]{title}[/]")
            for line in v.lines:
                console.print(escape(line))


def _compare_table(console: Any, comparison: Any, title: str) -> None:
    from rich import box
    from rich.table import Table

    from actlab.report.table import summary_table, table_note

    headers, rows = summary_table(comparison.summary)
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(table_note(comparison.summary), style="dim")


def _check_databases(args: argparse.Namespace, task: str) -> None:
    """Check --storage and (when the re-evaluation will use it, or it is given) --db before
    the search starts, writing nothing: one-line errors instead of a crash after the search."""
    from actlab.bench.plan import DEFAULT_DB
    from actlab.bench.store import check_results_db
    from actlab.search import check_storage

    check_storage(args.storage)
    if args.db is not None or not (args.no_final or task.startswith("curve:")):
        check_results_db(args.db or DEFAULT_DB)


def run(args: argparse.Namespace) -> int:
    from actlab.report import write_search_report
    from actlab.search import SearchProgress, finalize, run_search

    budget, objective, pipeline = validate(args)  # every flag, before any work
    _check_databases(args, objective.task)  # a bad --storage or --db fails now, not later
    console = _console()
    progress = (
        None if args.quiet else SearchProgress(budget, stream=sys.stdout, verbose=args.verbose)
    )
    console.print(
        f"actlab search: task {objective.task}, strategy {args.strategy}, budget {budget}, "
        f"funnel {pipeline.levels(objective)}, seed {args.seed}"
    )
    t0 = time.perf_counter()
    res = run_search(
        objective,
        args.strategy,
        budget=budget,
        study=args.study,
        storage=args.storage,
        pipeline=pipeline,
        workers=args.workers,
        ray=args.ray,
        seed=args.seed,
        form=args.form,
        keep=args.keep,
        on_result=progress,
        sampler=args.sampler,
    )
    if progress is not None:
        progress.close()
    _summary(console, res)
    final = None
    if not args.no_final:
        console.print(
            f"\nre-evaluating the top {args.top} against gelu, relu, crrelu "
            f"({args.final_seeds} fresh seeds)..."
        )
        final = finalize(
            res,
            top=args.top,
            seeds=args.final_seeds,
            db=args.db,
            workers=args.workers,
            objective=objective,
            transfer=args.transfer,
        )
        _final_table(console, final)
    if not args.no_report:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in res.study)
        path = write_search_report(res, args.report or f"search-{safe}.html", final)
        console.print(f"report: {path}")
    console.print(f"done in {time.perf_counter() - t0:.0f} s")
    if not res.ranked():  # nothing trainable found: say why on stderr, exit status 1
        why = res.message or f"no candidate finished successfully (stopped: {res.stopped})"
        print(f"actlab search: {why}", file=sys.stderr)
        return 1
    return 0
