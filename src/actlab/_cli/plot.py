"""`actlab plot NAME... -o file.png`: f and f' of several activations overlaid."""

from __future__ import annotations

import argparse

HELP = "plot f and f' of one or more activations on a grid into a PNG"
MAX_POINTS = 100_000  # a plot needs a few thousand; more only costs memory and time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", help="names or call strings, e.g. gelu 'crrelu(eps=0.1)'")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .svg or .pdf)")
    p.add_argument("--xmin", type=float, default=-4.0)
    p.add_argument("--xmax", type=float, default=4.0)
    p.add_argument("-n", "--points", type=int, default=801, help="grid points")


def run(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    from actlab.report.curves import plot_activations

    if not (math.isfinite(args.xmin) and math.isfinite(args.xmax)):
        raise ValueError(f"--xmin/--xmax must be finite numbers, got {args.xmin} and {args.xmax}")
    if not args.xmin < args.xmax:
        raise ValueError(f"--xmin ({args.xmin:g}) must be below --xmax ({args.xmax:g})")
    if not 2 <= args.points <= MAX_POINTS:
        raise ValueError(f"--points must be between 2 and {MAX_POINTS}, got {args.points}")
    out = Path(args.output)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ValueError(f"output {out} must end in .png, .svg or .pdf")
    if not out.parent.exists():
        raise FileNotFoundError(f"directory {out.parent} does not exist")
    plot_activations(list(args.specs), out, xlim=(args.xmin, args.xmax), n=args.points)
    print(f"wrote {out}")
    return 0
