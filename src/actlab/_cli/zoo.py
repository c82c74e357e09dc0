"""`actlab ls`: the activation zoo as a table (name, formula, learnable params, paper)."""

from __future__ import annotations

import argparse

HELP = "list registered activations (name, formula, parameters, paper)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="glob over names, e.g. 'gelu*'")
    p.add_argument(
        "--family", default=None, help="only this family (classic, eafo, polycom, search, sparse)"
    )
    p.add_argument("--plain", action="store_true", help="tab-separated output for scripts")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    import actlab

    names = actlab.list_activations(args.pattern, family=args.family)
    if not names:
        raise ValueError(
            f"no activation matches {args.pattern!r}"
            + (f" in family {args.family!r}" if args.family else "")
        )
    rows = []
    for n in names:
        info = actlab.get_activation_info(n)
        params = ", ".join(
            f"{k}={v!r}" for k, v in info.params.items() if k not in ("learnable", "weight_decay")
        )
        learn = ",".join(info.learnable)
        rows.append(
            (
                n,
                info.family,
                info.formula,
                params + (f" [learnable: {learn}]" if learn else ""),
                info.paper,
            )
        )
    if args.plain:
        for r in rows:
            print("\t".join(r))
        return 0
    table = Table(title=f"actlab activations ({len(rows)})", show_lines=False)
    for col in ("name", "family", "formula", "parameters", "paper"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    return 0
