"""Training throughput of the ViT presets, and what the activation costs inside a real step.

For each ViT preset one training step (forward, cross-entropy, backward, AdamW) on a fixed
random batch is timed for four builds of the same model, interleaved round-robin in the same
run; ratios and shares are computed within each round (four steps back to back) and the
median over rounds is printed, with the interquartile range of the CRReLU share, so slow
drifts of a shared machine cancel:

    gelu        the baseline: images/s = batch / median step time
    crrelu      ratio to gelu (<= 1.10 is the issue's target for the activation path)
    polyrelu    ratio to gelu
    identity    the MLP activation replaced by nn.Identity: the rest of the step

and the activation's share of the CRReLU step, (t_crrelu - t_identity) / t_crrelu (the
issue's target: <= 10%). Activations run in their default kernel mode ("auto": the native
C++ kernels for CRReLU on CPU, compiled fused kernels for other large tensors) unless --kernel
says otherwise; building and compiling happen in warm-up.

    python benchmarks/bench_train.py [--quick] [--presets vit_mini_28,vit_small_28]
        [--batch 128] [--tiny-batch 32] [--repeats 15] [--kernel auto] [--device cpu]
        [--threads N] [--compile-model]

--compile-model: each whole model under torch.compile (compiling happens in warm-up); inside
an outer compile the activations use their plain formula, which Inductor fuses into the
model's graph, so no per-call overhead of actlab's own kernel paths remains.

--quick: the two 28x28 presets, batch 64, 20 repeats (2-3 minutes on 2 CPU cores; fewer
repeats leave the share several points noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_samples  # noqa: E402

from actlab.activations import kernel_mode  # noqa: E402
from actlab.models.factory import build_model, get_model_preset, list_models  # noqa: E402

VARIANTS: dict[str, str | type] = {
    "gelu": "gelu",
    "crrelu": "crrelu",
    "polyrelu": "polyrelu",
    "identity": nn.Identity,
}


def input_shape(preset: str) -> tuple[int, int]:
    """(channels, size) a preset is meant for: 28x28 grey for *_28, else 32x32 RGB."""
    return (1, 28) if preset.endswith("_28") else (3, 32)


def make_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, sync: Callable[[], object]
) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()

    return step


def bench_preset(
    preset: str, batch: int, repeats: int, device: torch.device, mode: str, compiled: bool = False
) -> dict[str, list[float]]:
    c, size = input_shape(preset)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c, size, size, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    sync: Callable[[], object] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps: dict[str, Callable[[], None]] = {}
    for name, act in VARIANTS.items():
        torch.manual_seed(0)
        model = build_model(preset, act, in_chans=c, img_size=size, num_classes=10).to(device)
        if compiled:  # the whole model under torch.compile: activations fuse into its graph
            model = torch.compile(model)  # type: ignore[assignment]
        steps[name] = make_step(model, x, y, sync)
    with kernel_mode(mode):
        return interleaved_samples(steps, repeats=repeats, warmup=3)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="28x28 presets, batch 64, 20 repeats")
    ap.add_argument("--presets", default="", help="comma-separated ViT presets (default: all)")
    ap.add_argument("--batch", type=int, default=128, help="batch size of the small presets")
    ap.add_argument(
        "--tiny-batch",
        type=int,
        default=None,
        help="batch of vit_tiny_patch4_32 (default 32 on CPU, --batch on GPU)",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="interleaved repeats (default 15; 20 with --quick)",
    )
    ap.add_argument(
        "--kernel", default="auto", choices=["auto", "native", "compiled", "eager", "reference"]
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--compile-model",
        action="store_true",
        help="torch.compile each whole model (the activation formula fuses into its graph)",
    )
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    presets = [p for p in args.presets.split(",") if p] or [
        p for p in list_models("image") if p.startswith("vit_")
    ]
    batch, repeats = args.batch, args.repeats or 15
    if args.quick:
        presets = [p for p in presets if p.endswith("_28")] if not args.presets else presets
        batch, repeats = 64, args.repeats or 20
    for p in presets:
        get_model_preset(p)  # fail early on a typo
    tiny_batch = args.tiny_batch or (batch if dev.type == "cuda" else min(batch, 32))

    print(
        f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, "
        f"kernel mode {args.kernel}, {repeats} interleaved repeats (median)"
        + (", whole models under torch.compile" if args.compile_model else "")
    )
    head = (
        f"{'preset':<20} {'batch':>5} {'gelu img/s':>11} {'ms/step':>8} {'crrelu/gelu':>12} "
        f"{'polyrelu/gelu':>14} {'identity/gelu':>14} {'act share crrelu':>17} "
        f"{'act share gelu':>15}"
    )
    print(head)
    print("-" * len(head))
    for p in presets:
        b = tiny_batch if p == "vit_tiny_patch4_32" else batch
        t = bench_preset(p, b, repeats, dev, args.kernel, args.compile_model)
        rounds = list(zip(t["gelu"], t["crrelu"], t["polyrelu"], t["identity"]))
        g = statistics.median(t["gelu"])
        # ratios and shares per round (the four steps of a round ran back to back), then the
        # median over rounds: slow drifts of the machine cancel inside a round
        med = {
            "cr": statistics.median(r[1] / r[0] for r in rounds),
            "po": statistics.median(r[2] / r[0] for r in rounds),
            "id": statistics.median(r[3] / r[0] for r in rounds),
            "share_cr": statistics.median((r[1] - r[3]) / r[1] for r in rounds),
            "share_g": statistics.median((r[0] - r[3]) / r[0] for r in rounds),
        }
        q = statistics.quantiles([(r[1] - r[3]) / r[1] for r in rounds], n=4)
        print(
            f"{p:<20} {b:>5} {b / g:>11.0f} {g * 1e3:>8.1f} {med['cr']:>12.3f} {med['po']:>14.3f} "
            f"{med['id']:>14.3f} {med['share_cr']:>16.1%} {med['share_g']:>15.1%}   "
            f"(crrelu share IQR {q[0]:.1%}..{q[2]:.1%})",
            flush=True,
        )


if __name__ == "__main__":
    main()
