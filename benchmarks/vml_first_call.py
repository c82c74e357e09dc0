"""How often the first multi-threaded vectorised math call of a process is inaccurate.

Seen on the development machine (AVX-512 Xeon VM, torch 2.13.0+cpu, 2 threads): in a fresh
process whose first parallel operation is ``torch.tanh`` (or ``torch.erf``) on a few thousand
float32 values, part of the result is sometimes computed at lower accuracy: up to 5.2e-5 off
the float64 value for tanh (normally 6e-8), on about half of the elements, in 3-30 % of
processes. Later calls in the same process are exact; a first parallel operation of any kind
(a large sum) before it avoids it, and so does one thread. It is torch's / its math library's
thread-pool start, not actlab's (a plain ``import torch`` process shows it); actlab's test suite
starts the thread pool once per session (``tests/conftest.py``) so that no test meets it.

This script starts ``--runs`` fresh processes per variant and counts those whose first call
was off by more than 1e-6:

  plain   the first parallel operation is the checked call
  warmed  a parallel sum runs first
  1thread torch.set_num_threads(1) first

    python benchmarks/vml_first_call.py [--runs 30] [--op tanh|erf]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = """
import sys, torch
variant, op = sys.argv[1], getattr(torch, sys.argv[2])
if variant == "warmed":
    torch.ones(2_000_000).sum()
elif variant == "1thread":
    torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
x = 1.5 * torch.randn(8, 257, generator=g)
d = (op(x) - op(x.double()).float()).abs()
print(float(d.max()), int((d > 1e-6).sum()))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30, help="fresh processes per variant")
    ap.add_argument("--op", default="tanh", help="tanh or erf")
    args = ap.parse_args()
    if args.runs < 1:
        sys.exit(f"vml_first_call: --runs must be >= 1, got {args.runs}")
    if args.op not in ("tanh", "erf"):
        sys.exit(f"vml_first_call: --op takes tanh or erf, got {args.op!r}")
    print(f"first {args.op} call of a fresh process, {args.runs} processes per variant")
    for variant in ("plain", "warmed", "1thread"):
        bad, worst, elems = 0, 0.0, 0
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, "-c", CHILD, variant, args.op],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            err, n = out.stdout.split()
            if float(err) > 1e-6:
                bad, worst, elems = bad + 1, max(worst, float(err)), max(elems, int(n))
        print(f"{variant:8s} inaccurate in {bad:3d} / {args.runs} processes"
              f"  (worst {worst:.2e}, up to {elems} of 2056 values)")  # fmt: skip


if __name__ == "__main__":
    main()
