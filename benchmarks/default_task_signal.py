"""Which embedded task separates the baseline activations? (issue 15, item 1)

For each candidate task (a task name plus model settings), train gelu, relu and crrelu with
the same fresh seeds (1000, 1001, ...) that the search's re-evaluation uses, at the task's
full default training, and print per activation the mean test metric ± 95% CI, the paired
t-test p-value of every pair of baselines (raw and Holm-corrected over the three pairs) and
the wall time of the candidate. A good default task separates at least one pair at p < 0.05
with the seeds of the default ``actlab search`` (5) and trains fast enough for a 10-minute run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/default_task_signal.py [--seeds 5] [--fashion]

``--fashion`` adds a cut-down Fashion-MNIST candidate (needs the Debian package
``dataset-fashion-mnist``; not embedded, so not eligible as the default).
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import torch

from actlab.bench.stats import holm, mean_ci, paired_ttest
from actlab.train import run_training

BASELINES = ("gelu", "relu", "crrelu")

# (label, task, model, model_kwargs, training overrides)
CANDIDATES: list[tuple[str, str, str | None, dict[str, Any], dict[str, Any]]] = [
    ("digits-mlp (current default: MLP 256-256, 20 ep)", "digits-mlp", None, {}, {}),
    ("digits, MLP 6 x 32, 20 ep", "digits-mlp", "mlp", {"hidden": (32,) * 6}, {}),
    ("digits, MLP 8 x 32, 20 ep", "digits-mlp", "mlp", {"hidden": (32,) * 8}, {}),
    ("digits, MLP 10 x 24, 20 ep", "digits-mlp", "mlp", {"hidden": (24,) * 10}, {}),
    ("digits, MLP 6 x 32, 40 ep", "digits-mlp", "mlp", {"hidden": (32,) * 6}, {"epochs": 40}),
    (
        "digits, MLP 8 x 32 + LayerNorm, 20 ep",
        "digits-mlp",
        "mlp",
        {"hidden": (32,) * 8, "norm_layer": "layernorm"},
        {},
    ),
    ("fit-bessel (fit_net, task defaults: 100 ep)", "fit-bessel", None, {}, {}),
    ("fit-exp-sin (fit_net, task defaults: 100 ep)", "fit-exp-sin", None, {}, {}),
    ("fit-xy (fit_net, task defaults: 100 ep)", "fit-xy", None, {}, {}),
    ("fit-feynman-i-6-2 (fit_net, task defaults: 100 ep)", "fit-feynman-i-6-2", None, {}, {}),
]
FASHION = (
    "fashion-mnist, MLP 6 x 32, 600 steps",
    "fashion-mnist",
    "mlp",
    {"hidden": (32,) * 6},
    {"max_steps": 600},
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--fashion", action="store_true")
    ap.add_argument("--only", default=None, help="substring of the candidate labels to run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = list(range(1000, 1000 + args.seeds))
    cands = CANDIDATES + ([FASHION] if args.fashion else [])
    if args.only:
        cands = [c for c in cands if args.only in c[0]]
    for label, task, model, mkw, over in cands:
        t0 = time.perf_counter()
        vals: dict[str, list[float]] = {}
        metric = ""
        for act in BASELINES:
            vals[act] = []
            for s in seeds:
                r = run_training(task, act, seed=s, model=model, model_kwargs=mkw or None, **over)
                vals[act].append(r.value)
                metric = r.metric
        wall = time.perf_counter() - t0
        print(
            f"\n{label}: test {metric}, {len(seeds)} seeds, {wall:.0f} s "
            f"({wall / (3 * len(seeds)):.1f} s/run)"
        )
        for act, v in vals.items():
            m, h = mean_ci(v)
            print(f"  {act:7s} {m:.4f} ± {h:.4f}", flush=True)
        pairs = list(itertools.combinations(BASELINES, 2))
        ps = [paired_ttest(vals[a], vals[b]).pvalue for a, b in pairs]
        for (a, b), p, ph in zip(pairs, ps, holm(ps)):
            d = sum(vals[b]) / len(seeds) - sum(vals[a]) / len(seeds)
            print(f"  {b} - {a}: {d:+.4f}  p {p:.4f}  Holm {ph:.4f}{'  *' if ph < 0.05 else ''}")


if __name__ == "__main__":
    main()
