"""`actlab show NAME`: one activation in full (formula, paper, parameters, limits, values)."""

from __future__ import annotations

import argparse

HELP = "show one activation in detail (accepts call strings such as 'crrelu(eps=0.02)')"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="name or call string")


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    import actlab
    from actlab.registry import parse_spec

    name, _ = parse_spec(args.spec)
    info = actlab.get_activation_info(name)
    m = actlab.create_activation(args.spec)
    con = Console()
    con.print(
        f"[bold]{info.name}[/bold]  ({info.family}; {info.cls.__module__}.{info.cls.__qualname__})"
    )
    if info.aliases:
        con.print(f"aliases: {', '.join(info.aliases)}")
    con.print(f"formula: {info.formula}")
    con.print(f"paper:   {info.paper}")
    con.print(f"module:  {m!r}")
    con.print(f"defaults: {info.params}")
    learn = {n: p.detach().tolist() for n, p in m.named_parameters()}
    con.print(f"learnable: {learn or '(none)'}")
    con.print(f"elementwise: {info.elementwise}; smooth: {info.smooth}; fused kernel: {info.fused}")
    ends = [" or ".join(str(v) for v in info.limit_values(i)) for i in (0, 1)]
    vary = " (platform-dependent)" if any(info.limits_vary) else ""
    con.print(f"f(-inf), f(+inf): {ends[0]}, {ends[1]}{vary} (nan = documented nan)")
    if info.notes:
        con.print(f"notes: {info.notes}")
    doc = (info.cls.__doc__ or "").strip()
    if doc:
        con.print(f"doc: {doc}")
    if info.elementwise:
        xs = torch.tensor(
            [-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], dtype=torch.float64, requires_grad=True
        )
        # the table needs autograd through a leaf: an in-place op cannot run on it, so the
        # values come from a twin built without inplace (same parameters)
        mm = actlab.create_activation(args.spec, inplace=False).double()
        mm.load_state_dict(m.state_dict())
        y = mm(xs)
        (g,) = torch.autograd.grad(y.sum(), xs)
        t = Table(title="values")
        for col in ("x", "f(x)", "f'(x)"):
            t.add_column(col, justify="right")
        for a, b, c in zip(xs.tolist(), y.tolist(), g.tolist()):
            t.add_row(f"{a:g}", f"{b:.6g}", f"{c:.6g}")
        con.print(t)
    return 0
