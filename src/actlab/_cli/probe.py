"""``actlab probe``: run a probe set over a model on data and write a report with plots.

    actlab probe smollm2                       SmolLM2-135M on a Shakespeare passage
    actlab probe gemma3 --probes cett           Gemma-3-270M (CETT of its GeGLU FFNs)
    actlab probe minilm --text notes.txt       MiniLM-L6 on the lines of a text file
    actlab probe --task fashion-mnist --act crrelu --epochs 1 --max-steps 200

Pretrained models run once (eval mode, eager attention so heads expose their probabilities;
padded tokens of the MiniLM batch are left out of every per-token statistic); a task trains
its model with the probes attached (train-mode forward passes only) and, at each epoch end,
measures the information plane (I(X;T) with the validation samples as distinct inputs) and
sparsity on a fixed validation batch. The output folder gets ``summary.jsonl`` (every probe
row), ``report.html`` (figures embedded) and the figures as PNG files.

Every flag is checked before any model is loaded or any file written; flags that do not
apply to the chosen model or task are refused rather than ignored.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = (
    "probe a model's activations (sparsity, massive activations, attention entropy, ...) "
    "and write a report"
)

_PRETRAINED = ("minilm", "smollm2", "gemma3")
_CAUSAL = ("smollm2", "gemma3")
MAX_TOKENS = 8192  # SmolLM2's context length
MAX_LINES = 1024
MAX_EPOCHS = 1000


def add_arguments(p: argparse.ArgumentParser) -> None:
    from actlab.probes import DEFAULT_PROBES, PROBES
    from actlab.train import TASKS

    p.add_argument("model", nargs="?", choices=_PRETRAINED, help="an offline pretrained model")
    p.add_argument(
        "--task",
        default=None,
        help=f"train a task's model with probes instead: {', '.join(TASKS.names())}",
    )
    p.add_argument("--arch", default=None, help="model preset of --task (default: the task's)")
    p.add_argument("--act", default=None, help="activation spec for --task (default gelu)")
    p.add_argument(
        "--epochs", type=int, default=None, help=f"epochs for --task, 1..{MAX_EPOCHS} (default 1)"
    )
    p.add_argument("--max-steps", type=int, default=None, help="cap optimizer steps for --task")
    p.add_argument("--text", default=None, help="UTF-8 text file (default: Shakespeare)")
    p.add_argument(
        "--tokens",
        type=int,
        default=None,
        help=f"tokens of text for smollm2 / gemma3, 1..{MAX_TOKENS} (default 256)",
    )
    p.add_argument(
        "--lines",
        type=int,
        default=None,
        help=f"text lines (sentences) for minilm, 1..{MAX_LINES} (default 16)",
    )
    p.add_argument(
        "--probes",
        default=None,
        help=f"comma list of {', '.join(PROBES.names())} (default: {','.join(DEFAULT_PROBES)})",
    )
    p.add_argument("--sample", type=int, default=512, help="rows sampled per hook call (512)")
    p.add_argument("--seed", type=int, default=0, help="sampling / training seed, 0..2**32-1")
    p.add_argument("--out", default=None, help="output folder (default probe-<model or task>)")


def _read_text(name: str) -> str:
    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"text file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"--text {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"--text {path} is not UTF-8 text (byte {e.start}); convert it or give another file"
        ) from None
    if not text.strip():
        raise ValueError(f"--text {path} holds no text")
    return text


def _int_flag(flag: str, value: int | None, lo: int, hi: int | None = None) -> None:
    if value is not None and (value < lo or (hi is not None and value > hi)):
        span = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{flag} must be {span}, got {value}")


def validate(args: argparse.Namespace) -> list[str]:
    """Check every flag before any work; fill the per-model defaults; return the probes."""
    import actlab.probes as P

    if (args.model is None) == (args.task is None):
        raise ValueError(
            "give a pretrained model (minilm, smollm2, gemma3) or --task NAME, not both"
        )
    default = ",".join(P.DEFAULT_PROBES)
    probes = [
        s.strip()
        for s in (args.probes if args.probes is not None else default).split(",")
        if s.strip()
    ]
    if not probes:
        raise ValueError(f"--probes lists no probe name; e.g. --probes {default}")
    probes = [P.PROBES.resolve(name) for name in probes]  # unknown names fail with close matches
    _int_flag("--sample", args.sample, 1)
    _int_flag("--seed", args.seed, 0, 2**32 - 1)
    if args.model:
        for flag, value in (
            ("--task", args.task),
            ("--arch", args.arch),
            ("--act", args.act),
            ("--epochs", args.epochs),
            ("--max-steps", args.max_steps),
        ):
            if value is not None:
                raise ValueError(f"{flag} applies to --task runs, not to a pretrained model")
        labelled = [n for n in probes if n in P.PROBES.names(needs_labels=True)]
        if labelled:
            raise ValueError(f"--probes {labelled[0]} needs labelled data: use it with --task")
        other = "--lines" if args.model in _CAUSAL else "--tokens"
        if (args.lines if other == "--lines" else args.tokens) is not None:
            raise ValueError(
                f"{other} does not apply to {args.model} "
                f"(use {'--tokens' if other == '--lines' else '--lines'})"
            )
        _int_flag("--tokens", args.tokens, 1, MAX_TOKENS)
        _int_flag("--lines", args.lines, 1, MAX_LINES)
        args.tokens = 256 if args.tokens is None else args.tokens
        args.lines = 16 if args.lines is None else args.lines
        args.text_value = _read_text(args.text) if args.text else None
        if (
            args.text_value is not None
            and args.model == "minilm"
            and not _lines(args.text_value, 1)
        ):
            raise ValueError(f"--text {args.text} has no line longer than 3 characters")
    else:
        for flag, value in (
            ("--text", args.text),
            ("--tokens", args.tokens),
            ("--lines", args.lines),
        ):
            if value is not None:
                raise ValueError(
                    f"{flag} applies to a pretrained model (minilm, smollm2, gemma3), not to "
                    "--task runs"
                )
        from actlab.models.factory import get_model_preset
        from actlab.registry import create_activation
        from actlab.train.tasks import get_task

        get_task(args.task)
        if args.arch is not None:
            get_model_preset(args.arch)
        args.act = "gelu" if args.act is None else args.act
        try:
            create_activation(args.act)
        except Exception as e:  # any construction failure is a bad spec
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"--act {args.act!r}: {first}") from None
        _int_flag("--epochs", args.epochs, 1, MAX_EPOCHS)
        _int_flag("--max-steps", args.max_steps, 1)
        args.epochs = 1 if args.epochs is None else args.epochs
    out = Path(args.out or f"probe-{args.model or args.task}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder; give a folder path")
    return probes


def _lines(text: str, n: int) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if len(ln.strip()) > 3][:n]


def _text(args: argparse.Namespace) -> str:
    if getattr(args, "text_value", None):
        return str(args.text_value)
    from actlab.data.text import load_shakespeare

    text = load_shakespeare()
    start = text.find("To be, or not to be")
    return text[max(start, 0) :]


def _pretrained(args: argparse.Namespace, probes: list[str]) -> tuple[Any, list[str]]:
    import torch

    import actlab.probes as P
    from actlab.models import pretrained

    text = _text(args)
    if args.model == "minilm":
        model, tok = pretrained.load_minilm()
        lines = _lines(text, args.lines)
        enc = tok(lines, return_tensors="pt", padding=True, truncation=True, max_length=128)
        tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    else:
        load = pretrained.load_gemma3 if args.model == "gemma3" else pretrained.load_smollm2
        model, tok = load()
        enc = tok(text[: args.tokens * 8], return_tensors="pt")
        enc = {k: v[:, : args.tokens] for k, v in enc.items()}
        tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    if "attention" in probes:
        P.use_eager_attention(model)
    # model(**enc) passes attention_mask=: the manager captures it, so the padded tokens of
    # the MiniLM batch are left out of every per-token statistic
    with P.probe(model, probes=probes, sample=args.sample, seed=args.seed) as mgr, torch.no_grad():
        model(**enc)
    return mgr, tokens


def _task(
    args: argparse.Namespace, probes: list[str], out: Path
) -> tuple[Any, list[dict[str, Any]]]:
    import torch

    import actlab.probes as P
    from actlab.train import run_training
    from actlab.train.tasks import get_task

    task = get_task(args.task)
    cfg = task.config(epochs=args.epochs)
    data = task.loaders(cfg, args.seed, model=args.arch)
    x_val, y_val = next(iter(data.val))
    train_cb = P.ProbeCallback(
        probes=probes, sample=args.sample, seed=args.seed, log_to=out / "train_probes.jsonl"
    )
    plane: list[dict[str, Any]] = []

    class EpochPlane:
        """At each epoch end: information plane and sparsity on a fixed validation batch."""

        def on_epoch_end(self, record: dict[str, Any], model: Any) -> None:
            was = model.training
            model.eval()
            with (
                P.probe(
                    model,
                    probes=["infoplane", "sparsity"],
                    mode="eval",
                    sample=args.sample,
                    seed=args.seed,
                ) as m,
                torch.no_grad(),
            ):
                # distinct validation samples: I(X;T) with X = the sample's index
                m.set_context(labels=y_val, input_ids=torch.arange(len(y_val)))
                model(x_val)
            model.train(was)
            for r in m.summary():
                plane.append({**r, "epoch": record.get("epoch")})
            plane.append(
                {
                    "probe": "act_params",
                    "layer": "",
                    "epoch": record.get("epoch"),
                    **{str(k): v for k, v in (record.get("act_params") or {}).items()},
                }
            )

    result = run_training(
        task,
        args.act,
        args.seed,
        model=args.arch,
        epochs=args.epochs,
        max_steps=args.max_steps,
        callbacks=[train_cb, EpochPlane()],
    )
    print(
        f"{task.name} {args.act}: test {task.metric} {result.value:.4f} after {result.steps} steps"
    )
    return train_cb, plane


def run(args: argparse.Namespace) -> int:
    import actlab.probes as P
    from actlab.report import write_probe_report

    probes = validate(args)
    out = Path(args.out or f"probe-{args.model or args.task}")
    out.mkdir(parents=True, exist_ok=True)
    plane: list[dict[str, Any]] | None = None
    if args.model:
        mgr, tokens = _pretrained(args, probes)
        table = mgr.summary()
        title = f"actlab probe {args.model}"
    else:
        cb, plane = _task(args, probes, out)
        table = cb.history[-1] if cb.history else P.ProbeTable([])
        tokens = None
        title = f"actlab probe --task {args.task} --act {args.act}"
        with (out / "infoplane.jsonl").open("w", encoding="utf-8") as f:
            for r in plane:
                f.write(json.dumps(r) + "\n")
    table.to_jsonl(out / "summary.jsonl")
    _print_findings(table, tokens)
    page = write_probe_report(out / "report.html", title, table.rows, plane=plane, tokens=tokens)
    print(f"wrote {page} and {out / 'summary.jsonl'}")
    return 0


def _print_findings(table: Any, tokens: list[str] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    import actlab.probes as P
    from actlab.report import short_name

    con = Console()
    mass = table.where(probe="massive").rows
    if mass:
        t = Table(title="massive activations (block outputs)")
        for c in ("layer", "max|h|", "median|h|", "ratio", "massive", "top dims", "top token"):
            t.add_column(c)
        for r in mass:
            top = r["top_tokens"][0] if r["top_tokens"] else None
            where = ""
            if top is not None:
                label = tokens[top["position"]] if tokens and top["position"] < len(tokens) else ""
                where = f"pos {top['position']} {label!r} dim {top['dim']}"
            t.add_row(
                short_name(str(r["layer"])),
                f"{r['max_abs']:.4g}",
                f"{r['median_abs']:.3g}",
                f"{r['ratio']:.4g}",
                "yes" if r["massive"] else "",
                " ".join(str(d) for d, _ in r["top_dims"][:3]),
                where,
            )
        con.print(t)
    att = table.where(probe="attention").rows
    heads = [r for r in att if "head" in r]
    if heads:
        bands = P.entropy_bands(heads)
        t = Table(title=f"attention-entropy bands (M = {bands['M']:.3f} nats): {bands['verdict']}")
        for c in ("layer", "collapse", "healthy", "overload", "mean entropy", "mean normalised"):
            t.add_column(c)
        for layer, sh in bands["per_layer"].items():
            rows = [r for r in heads if r["layer"] == layer]
            t.add_row(
                short_name(layer),
                *(f"{sh.get(b, 0):.2f}" for b in ("collapse", "healthy", "overload")),
                f"{sum(r['entropy'] for r in rows) / len(rows):.3f}",
                f"{sum(r['entropy_norm'] for r in rows) / len(rows):.3f}",
            )
        con.print(t)
    elif att:
        con.print(att[0].get("note", ""))
