"""Search benchmark: evolution (with rejection and funnels) vs random search on digits.

Claim (issue 4): at an equal budget of evaluations, regularised evolution with cheap
rejection (checks, cost filter, quality floor) and a funnel reaches a better activation
than random search. Measured here, on the real trainer (`digits-mlp`: sklearn digits, MLP):

- configs, each with the same budget of evaluation units (one unit = one 3-epoch training):
    random        random grammar samples, no rejection, no funnel (plain baseline)
    random+rej    random samples behind the cheap checks, cost filter and quality floor
    evolution     regularised evolution (warm start relu/gelu/swish/crrelu) + rejection +
                  funnel 3 -> 8 epochs (top 15% promoted); population 12, tournament 4
    evo-nofunnel  the same without the funnel
    evo-top3      evolution whose last funnel level averages 3 training runs (top_seeds=3)
    eafo          the same with EAFO entropy-correction mutations (Gaussian / measured)
- per search (seeds 0..S-1): the best level-0 validation accuracy found (3 epochs, raw: the
  maximum of noisy evaluations, so it rewards sheer numbers of samples); the candidate the
  search returns (best at the highest funnel level) re-evaluated on the same 3-epoch budget
  with 5 fresh seeds (2000..2004: the proxy's true value, free of the winner's curse); and
  the same candidate re-trained for the task's full 20 epochs with 3 fresh seeds
  (1000..1002): its mean validation and test accuracy;
- the fraction of the spent units that went to candidates later rejected (quality floor,
  divergence, failure in training) and the number of cheap rejections (which cost 0 units);
- medians over the search seeds; GELU re-trained with the same fresh seeds for reference.

    .venv/bin/python benchmarks/bench_search.py --budget 60 --seeds 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any

import torch

from actlab.search import (
    CostFilter,
    Pipeline,
    QualityFloor,
    TrainObjective,
    make_strategy,
    run_search,
)

TASK = "digits-mlp"
FRESH = (1000, 1001, 1002)  # full re-training (20 epochs)
FRESH_PROXY = (2000, 2001, 2002, 2003, 2004)  # re-evaluation at the level-0 budget (3 epochs)


def _pipelines() -> dict[str, tuple[str, Pipeline]]:
    rej = dict(cost=CostFilter(8.0), floor=QualityFloor(0.3, after=1))
    return {
        "random": (
            "random",
            Pipeline(checks=False, cost=None, proxies=False, max_nodes=None, budgets=(3,)),
        ),
        "random+rej": ("random", Pipeline(budgets=(3,), **rej)),  # type: ignore[arg-type]
        "evolution": ("evolution", Pipeline(budgets=(3, 8), **rej)),  # type: ignore[arg-type]
        "evo-nofunnel": ("evolution", Pipeline(budgets=(3,), **rej)),  # type: ignore[arg-type]
        "evo-top3": ("evolution", Pipeline(budgets=(3, 8), top_seeds=3, **rej)),  # type: ignore[arg-type]
        "eafo": ("eafo", Pipeline(budgets=(3, 8), **rej)),  # type: ignore[arg-type]
    }


def _retrain(
    spec: str, seeds: tuple[int, ...] = FRESH, epochs: int | None = None
) -> tuple[float, float]:
    """Mean (val, test) accuracy of ``spec`` trained on fresh ``seeds`` (task epochs if None)."""
    from actlab.train import run_training

    vals, tests = [], []
    for s in seeds:
        r = run_training(TASK, spec, s, epochs=epochs, checkpoint="none")
        vals.append(float(r.history[-1]["val_accuracy"]))
        tests.append(float(r.value))
    return statistics.mean(vals), statistics.mean(tests)


def _one(config: str, seed: int, budget: int, population: int) -> dict[str, Any]:
    name, pipe = _pipelines()[config]
    obj = TrainObjective(TASK, record_density=name == "eafo")
    levels = len(pipe.levels(obj))
    strat = (
        make_strategy("random", seed=seed)
        if name == "random"
        else make_strategy(
            name,
            seed=seed,
            levels=levels,
            keep=0.15,
            population_size=population,
            sample_size=max(2, population // 3),
            max_nodes=pipe.max_nodes,
        )
    )
    t0 = time.perf_counter()
    res = run_search(
        obj,
        strat,
        budget=budget,
        storage="memory",
        study=f"{config}-{seed}",
        pipeline=pipe,
        seed=seed,
    )
    secs = time.perf_counter() - t0
    l0 = [r.result.quality for r in res.level0() if r.result is not None]
    best = res.best()
    val, test = _retrain(best.candidate.spec) if best is not None else (math.nan, math.nan)
    proxy, _ = (
        _retrain(best.candidate.spec, FRESH_PROXY, 3) if best is not None else (math.nan, 0.0)
    )
    cheap = sum(
        1 for r in res.finished if r.result is not None and not r.result.ok and r.result.units == 0
    )
    return {
        "best_l0": max(l0) if l0 else math.nan,
        "proxy": proxy,
        "retrain_val": val,
        "retrain_test": test,
        "wasted": res.wasted_fraction(),
        "cheap": cheap,
        "evals": sum(1 for r in res.finished if r.result is not None and r.result.units > 0),
        "formula": best.candidate.formula if best is not None else "-",
        "seconds": secs,
    }


def _med(xs: list[float]) -> str:
    xs = [x for x in xs if math.isfinite(x)]
    return f"{statistics.median(xs):.4f} [{min(xs):.4f}, {max(xs):.4f}]" if xs else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=60, help="evaluation units per search")
    ap.add_argument("--seeds", type=int, default=5, help="search seeds (>= 5 for the claim)")
    ap.add_argument("--configs", default="random,random+rej,evolution,evo-nofunnel,eafo")
    ap.add_argument("--population", type=int, default=12, help="evolution population size")
    args = ap.parse_args()
    torch.set_num_threads(1)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    print(
        f"task {TASK}, budget {args.budget} units per search, seeds 0..{args.seeds - 1}, "
        f"evolution population {args.population}, torch threads 1"
    )
    gelu_val, gelu_test = _retrain("gelu")
    print(
        f"reference gelu re-trained (20 epochs, seeds {FRESH}): "
        f"val {gelu_val:.4f} test {gelu_test:.4f}"
    )
    rows: dict[str, list[dict[str, Any]]] = {}
    for config in configs:
        rows[config] = []
        for seed in range(args.seeds):
            r = _one(config, seed, args.budget, args.population)
            rows[config].append(r)
            print(
                f"  {config:11s} seed {seed}: best L0 val {r['best_l0']:.4f}  top-1 3-epoch fresh "
                f"{r['proxy']:.4f}  20-epoch val {r['retrain_val']:.4f} "
                f"test {r['retrain_test']:.4f}  wasted "
                f"{100 * r['wasted']:.0f}%  cheap rejections {r['cheap']}  ({r['seconds']:.0f} s)  "
                f"{r['formula'][:60]}",
                flush=True,
            )
    print("\nmedian [min, max] over search seeds")
    print(
        f"{'config':12s} {'best L0 val (raw)':>26s} {'top-1 3ep fresh val':>26s} "
        f"{'top-1 20ep val':>26s} {'top-1 20ep test':>26s} {'on rejected':>11s} {'cheap':>6s}"
    )
    for config, rs in rows.items():
        print(
            f"{config:12s} {_med([r['best_l0'] for r in rs]):>26s} "
            f"{_med([r['proxy'] for r in rs]):>26s} "
            f"{_med([r['retrain_val'] for r in rs]):>26s} "
            f"{_med([r['retrain_test'] for r in rs]):>26s} "
            f"{100 * statistics.median(r['wasted'] for r in rs):>10.1f}% "
            f"{statistics.median(r['cheap'] for r in rs):>6.0f}"
        )
    for evo in ("evolution", "evo-nofunnel", "eafo"):
        for base in ("random", "random+rej"):
            if evo not in rows or base not in rows:
                continue
            for key in ("best_l0", "proxy", "retrain_val"):
                d = [e[key] - r[key] for e, r in zip(rows[evo], rows[base])]
                print(
                    f"{evo} - {base}, {key}: median {statistics.median(d):+.4f} "
                    f"(ahead on {sum(x > 0 for x in d)}/{len(d)} seeds, behind on "
                    f"{sum(x < 0 for x in d)})"
                )


if __name__ == "__main__":
    main()
