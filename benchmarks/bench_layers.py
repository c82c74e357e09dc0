"""Forward+backward step time and memory of the structured layers vs what they replace.

One run, four groups (and an optional width sweep); in each, every entry is timed in
rounds with the group's baseline, in a shuffled order each round
(``_common.interleaved_samples``: this machine is shared and its speed drifts), and the
table gives the median step time, the median of the per-round time ratios to the baseline
with their interquartile range, the ratio of the fastest steps (``min``: the least disturbed
estimate when other processes burst), the parameters, and the bytes autograd saves for
backward (on CPU the activation-memory proxy; on CUDA also the peak allocated bytes of one
step):

  mlp-slot (transformer)   x (64, 17, 64) tokens, D 64: mlp(gelu) with hidden 128 vs af_kan,
                           relu_kan, s_kan at equal parameters (widths from
                           actlab.models.match_hidden; s_kan in its full phase, all four
                           spaces, and pruned, one space per node), polynorm_mlp, moe (equal
                           *active* parameters, its default), pykan [64, H, 64] at equal
                           parameters
  mlp-slot (fit)           x (100, 2) -> 1, 600 parameters: the function-fitting setting of
                           the fit-* tasks; mlp(silu) vs the KANs and pykan
  attention score          q, k, v (64, 4, 17, 16): softmax module + p @ v vs the fused
                           scaled_dot_product_attention and fourier_karat(heads=4)
                           (softmax has no parameters: "equal parameters" does not apply)
  norm + act (NCHW)        x (32, 32, 16, 16): BatchNorm2d + ReLU vs evonorm_b0 / evonorm_s0
  phases (not by default)  the transformer slot (D 64) with AF-KAN at G = 2, 4, 8, 16 phases
                           (one width), and the least-squares line of its ratio against G:
                           what one phase costs and what does not scale with the phases
  spaces (not by default)  the transformer slot (D 64) with S-KAN in its full phase on its
                           whole pool and on each space alone (one width): what each space
                           adds to a full-phase step (the pool evaluates all four per input)
  width (not by default)   the transformer slot at every D of --widths (default 64, 128, 256,
                           512): mlp(gelu) with hidden 2 D vs the KAN rows at equal parameters,
                           one table per D and a summary of the ratios. A KAN layer's basis
                           costs per input element (G functions, AF-KAN 2 G act values) and is
                           amortised over the output width, so the ratio depends on D; every
                           width given is run and reported (pykan only in the transformer group)

A step is: zero grads, y = layer(x), y.square().mean().backward(). Inside a network a layer's
input carries a gradient (it comes from the layers below), so in the transformer, attention and
norm groups (and the phases, spaces and width groups) the input requires grad and its gradient
is part of the step, for the baseline and every row alike; the fit group's input is data
(no gradient). ``--no-input-grad`` drops the input gradient everywhere (the definition of the
figures before 2026-12-05, evening). pykan
(``pip install --no-deps pykan`` + pandas; the ``bench`` extra) runs in its speed mode
(``model.speed()``: no symbolic branch, no saved activations); without it the pykan rows are
skipped with the reason printed. Figures from a shared 2-core machine are preliminary.

    python benchmarks/bench_layers.py [--repeats 30] [--threads 1] [--device cpu]
        [--groups transformer,fit,attention,norm,phases,spaces,width]
        [--widths 64,128,256,512]
        [--batch 64]
        [--compile] [--plain]

The KAN rows run their native CPU kernels (``actlab.layers._kan_native``: basis and backward
fused, one GEMM each way; float32 / float64 on CPU) when the library builds, else their torch
paths (the header says which). ``--plain`` adds each KAN on its torch path (``fused=False``) as
a row beside it, so the kernels' gain is measured in the same interleaved rounds.
``--compile`` adds relu_kan under ``torch.compile`` (inductor fuses the torch path's basis and
its backward into a few loops; the first step compiles for about a minute on 2 busy cores).

Targets (issue 14): KAN layers <= 2x an MLP of equal parameters; PolyNorm <= 1.3x GELU's
MLP; EvoNorm <= 1.5x BN+ReLU.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_samples, saved_bytes  # noqa: E402

from actlab.layers import _kan_native as kan_native  # noqa: E402
from actlab.layers import create_layer, list_layers  # noqa: E402
from actlab.models import match_hidden  # noqa: E402
from actlab.models.vit import attention  # noqa: E402


@dataclass
class Entry:
    name: str
    forward: Callable[[], Tensor]  # one forward pass (inputs bound)
    params: int
    note: str = ""
    inputs: list[Tensor] = field(default_factory=list)  # inputs whose gradients count too


def _n(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def _pykan(width: list[int], target: int, device: str) -> tuple[nn.Module | None, str]:
    """pykan's KAN [in, H, out] with H chosen for ~target parameters, or (None, reason)."""
    try:
        from kan import KAN
    except Exception as e:  # noqa: BLE001 -- any import failure is a reason to skip
        return None, f"pykan unavailable ({type(e).__name__}: {e}); pip install --no-deps pykan"
    ckpt = tempfile.mkdtemp(prefix="pykan-")

    def build(h: int) -> nn.Module:
        m = KAN(width=[width[0], h, width[1]], grid=5, k=3, seed=0, auto_save=False,
                ckpt_path=ckpt, device=device)  # fmt: skip
        return m.speed()

    p1, p2 = _n(build(1)), _n(build(2))
    h = max(1, round((target - p1) / (p2 - p1)) + 1)
    return build(h), f"H={h}"


def _step(forward: Callable[[], Tensor], params: list[Tensor]) -> Callable[[], None]:
    def run() -> None:
        for p in params:
            p.grad = None
        forward().float().square().mean().backward()

    return run


def _net_input(*shape: int, device: str) -> Tensor:
    """A random input of an in-network slot: it requires grad (the layers below need its
    gradient) unless --no-input-grad."""
    return torch.randn(*shape, device=device).requires_grad_(INPUT_GRAD)


def _ins(x: Tensor) -> list[Tensor]:
    """The inputs whose gradients count in a step (zeroed with the parameters)."""
    return [x] if x.requires_grad else []


def _kan_entries(
    x: Tensor, d_out: int, target: int, act: str, device: str, base_hidden: int | None
) -> list[tuple[Entry, nn.Module]]:
    d_in = x.shape[-1]
    ins = _ins(x)
    out: list[tuple[Entry, nn.Module]] = []
    specs = ["mlp", "af_kan", "relu_kan", "s_kan"]
    for spec in specs:
        h = (
            base_hidden
            if spec == "mlp" and base_hidden
            else match_hidden(spec, d_in, d_out, target)
        )
        torch.manual_seed(0)
        m = create_layer(spec, in_features=d_in, hidden_features=h, out_features=d_out,
                         act_layer=act).to(device)  # fmt: skip
        out.append((Entry(spec if spec != "mlp" else f"mlp({act})", lambda m=m: m(x), _n(m),
                          f"H={h}", ins), m))  # fmt: skip
        if PLAIN and spec != "mlp":  # the same module on its torch path (fused=False)
            twin = copy.deepcopy(m)
            for lay in (twin.layer1, twin.layer2):
                lay.fused = False
            out.append((Entry(f"{spec} (torch)", lambda t=twin: t(x), _n(twin), f"H={h}", ins),
                        twin))  # fmt: skip
        if spec == "relu_kan" and COMPILE:  # inductor's fusion of the torch path
            c = torch.compile(m)
            out.append((Entry("relu_kan compiled", lambda c=c: c(x), _n(m), f"H={h}", ins), m))
        if spec == "s_kan":  # after the schedule: one space per node
            torch.manual_seed(0)
            pruned = create_layer(spec, in_features=d_in, hidden_features=h,
                                  out_features=d_out).to(device)  # fmt: skip
            with torch.no_grad():  # spread the choices over the pool, then prune
                for lay in (pruned.layer1, pruned.layer2):
                    lay.logits.normal_()
            pruned.prune()
            out.append((Entry("s_kan (pruned)", lambda m=pruned: m(x), _n(pruned), f"H={h}",
                              ins), pruned))  # fmt: skip
            if PLAIN:
                twin = copy.deepcopy(pruned)
                for lay in (twin.layer1, twin.layer2):
                    lay.fused = False
                out.append((Entry("s_kan pruned (torch)", lambda t=twin: t(x), _n(twin),
                                  f"H={h}", ins), twin))  # fmt: skip
    return out


def _slot(d: int, device: str) -> tuple[Tensor, list[tuple[Entry, nn.Module]], int]:
    """The transformer MLP slot at width d: x (BATCH, 17, d), mlp(gelu) with hidden 2 d and the
    KANs at its parameter count (their widths from match_hidden)."""
    x = _net_input(BATCH, 17, d, device=device)
    base = create_layer("mlp", in_features=d, hidden_features=2 * d, out_features=d,
                        act_layer="gelu").to(device)  # fmt: skip
    target = _n(base)
    return x, _kan_entries(x, d, target, "gelu", device, 2 * d), target


def group_transformer(device: str) -> tuple[list[tuple[Entry, nn.Module]], list[str]]:
    x, rows, target = _slot(64, device)
    skipped: list[str] = []
    extra = {"polynorm_mlp": {}, "moe": {}}
    for name, kw in extra.items():
        if name not in list_layers():
            skipped.append(f"{name}: not registered")
            continue
        torch.manual_seed(0)
        m = create_layer(name, in_features=64, hidden_features=128, out_features=64,
                         act_layer="gelu", **kw).to(device)  # fmt: skip
        note = "equal active params" if name == "moe" else "hidden 128"
        rows.append((Entry(name, lambda m=m: m(x), _n(m), note, _ins(x)), m))
    kan, why = _pykan([64, 64], target, device)
    if kan is None:
        skipped.append(f"pykan: {why}")
    else:  # pykan takes (B, in): the reshape is part of its step (a view)
        rows.append((Entry("pykan", lambda: kan(x.reshape(-1, 64)), _n(kan), why, _ins(x)), kan))
    return rows, skipped


def group_fit(device: str) -> tuple[list[tuple[Entry, nn.Module]], list[str]]:
    x = torch.rand(100, 2, device=device) * 2 - 1
    rows = _kan_entries(x, 1, 600, "silu", device, None)
    kan, why = _pykan([2, 1], 600, device)
    if kan is None:
        return rows, [f"pykan: {why}"]
    rows.append((Entry("pykan", lambda: kan(x), _n(kan), why), kan))
    return rows, []


def group_attention(device: str) -> tuple[list[tuple[Entry, nn.Module]], list[str]]:
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(BATCH, 4, 17, 16, generator=g).to(device).requires_grad_(INPUT_GRAD)
               for _ in range(3))  # fmt: skip
    soft = create_layer("softmax")
    torch.manual_seed(0)
    karat = create_layer("fourier_karat(heads=4, max_keys=17)").to(device)
    qkv = _ins(q) + _ins(k) + _ins(v)  # their gradients are part of the step
    rows = [
        (Entry("softmax", lambda: attention(q, k, v, soft, 0.0), 0, "module + p @ v", qkv), soft),
        (Entry("sdpa (fused)", lambda: attention(q, k, v, None, 0.0), 0, "the ViT default", qkv),
         nn.Module()),
        (Entry("fourier_karat", lambda: attention(q, k, v, karat, 0.0), _n(karat),
               "G=3, r=8, heads=4", qkv), karat),
    ]  # fmt: skip
    return rows, []


def group_norm(device: str) -> tuple[list[tuple[Entry, nn.Module]], list[str]]:
    x = _net_input(32, 32, 16, 16, device=device)  # a convolution's output, in a ResNet
    bn = nn.Sequential(nn.BatchNorm2d(32), nn.ReLU()).to(device)
    rows = [(Entry("batchnorm+relu", lambda: bn(x), _n(bn), "", _ins(x)), bn)]
    skipped = []
    for name in ("evonorm_b0", "evonorm_s0"):
        if name not in list_layers():
            skipped.append(f"{name}: not registered")
            continue
        m = create_layer(name, num_features=32).to(device)
        rows.append((Entry(name, lambda m=m: m(x), _n(m), "", _ins(x)), m))
    return rows, skipped


def group_width(d: int) -> Builder:
    """The transformer slot at width d, KAN rows only (the width sweep)."""

    def build(device: str) -> tuple[list[tuple[Entry, nn.Module]], list[str]]:
        return _slot(d, device)[1], ["pykan: not in the sweep (the transformer group has it)"]

    return build


PHASES = ((1, 1), (2, 2), (5, 3), (10, 6))  # (grid, k): G = grid + k = 2, 4, 8 (default), 16


def group_phases(device: str) -> tuple[list[tuple[Entry, nn.Module]], list[str]]:
    """The transformer slot (D 64) with AF-KAN at G = 2, 4, 8, 16 phases, one width (the one
    matched at the default G = 8): where its step time goes, per phase and fixed."""
    x = _net_input(BATCH, 17, 64, device=device)
    base = create_layer("mlp", in_features=64, hidden_features=128, out_features=64,
                        act_layer="gelu").to(device)  # fmt: skip
    h = match_hidden("af_kan", 64, 64, _n(base))
    rows = [(Entry("mlp(gelu)", lambda: base(x), _n(base), "hidden 128", _ins(x)), base)]
    for grid, k in PHASES:
        torch.manual_seed(0)
        m = create_layer("af_kan", in_features=64, hidden_features=h, out_features=64,
                         grid=grid, k=k).to(device)  # fmt: skip
        rows.append((Entry(f"af_kan G={grid + k}", lambda m=m: m(x), _n(m), f"H={h}", _ins(x)),
                     m))  # fmt: skip
    return rows, []


def print_phases(summary: dict[str, tuple[float, ...]]) -> None:
    """Least-squares line of AF-KAN's median ratio against G: the fixed part (G -> 0) and the
    cost of one phase, both in MLP steps."""
    gs = [float(g + k) for g, k in PHASES]
    rs = [summary[f"af_kan G={int(g)}"][0] for g in gs]
    mg, mr = sum(gs) / len(gs), sum(rs) / len(rs)
    slope = sum((g - mg) * (r - mr) for g, r in zip(gs, rs)) / sum((g - mg) ** 2 for g in gs)
    print(f"af_kan step / mlp step ~= {mr - slope * mg:.2f} + {slope:.3f} x G (least squares over "
          f"G = {', '.join(str(int(g)) for g in gs)}): the part that does not scale with the "
          "phases (GEMMs, min-max, softmax, LayerNorm, act, their backward) alone is the "
          "intercept")  # fmt: skip


def group_spaces(device: str) -> tuple[list[tuple[Entry, nn.Module]], list[str]]:
    """The transformer slot (D 64) with S-KAN in its full phase on each space alone and on the
    whole pool, one width (the pool's matched one): what each space adds to a full-phase step."""
    x = _net_input(BATCH, 17, 64, device=device)
    base = create_layer("mlp", in_features=64, hidden_features=128, out_features=64,
                        act_layer="gelu").to(device)  # fmt: skip
    h = match_hidden("s_kan", 64, 64, _n(base))
    rows = [(Entry("mlp(gelu)", lambda: base(x), _n(base), "hidden 128", _ins(x)), base)]
    for spaces in ("bspline,rbf,chebyshev,relu", "bspline", "rbf", "chebyshev", "relu"):
        torch.manual_seed(0)
        m = create_layer("s_kan", in_features=64, hidden_features=h, out_features=64,
                         spaces=spaces).to(device)  # fmt: skip
        label = "s_kan full (pool)" if "," in spaces else f"s_kan {spaces} only"
        rows.append((Entry(label, lambda m=m: m(x), _n(m), f"H={h}", _ins(x)), m))
    return rows, []


Builder = Callable[[str], tuple[list[tuple[Entry, nn.Module]], list[str]]]
GROUPS: dict[str, tuple[str, Builder]] = {
    "transformer": ("mlp-slot (transformer) x (64, 17, 64)", group_transformer),
    "fit": ("mlp-slot (fit) x (100, 2) -> 1, 600 params", group_fit),
    "attention": ("attention score q, k, v (64, 4, 17, 16)", group_attention),
    "norm": ("norm + act (NCHW) x (32, 32, 16, 16)", group_norm),
    "phases": ("af_kan phases: mlp-slot (transformer) x (64, 17, 64), G = 2..16", group_phases),
    "spaces": ("s_kan spaces: mlp-slot (transformer) x (64, 17, 64), full phase", group_spaces),
}
WIDTHS = "64,128,256,512"


def _peak(step: Callable[[], None], device: str) -> str:
    if not device.startswith("cuda"):
        return "-"
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return f"{torch.cuda.max_memory_allocated() / 2**20:.1f} MiB"


BATCH = 64  # --batch: the leading dimension of the transformer-slot and attention inputs
COMPILE = False  # --compile: add torch.compile rows (inductor; compiling takes minutes here)
PLAIN = False  # --plain: add each KAN on its torch path (fused=False) beside its native kernels
INPUT_GRAD = True  # --no-input-grad: in-network slots' inputs without a gradient (the old steps)


def run_group(
    title: str, build: Builder, repeats: int, device: str
) -> dict[str, tuple[float, ...]]:
    """Time one group's rows interleaved; print its table; return name -> (median ratio, q1,
    q3) of the per-round ratios to the group's baseline (its first row)."""
    rows, skipped = build(device)
    steps: dict[str, Callable[[], None]] = {}
    for entry, module in rows:
        params = [p for p in module.parameters() if p.requires_grad] + entry.inputs
        step = _step(entry.forward, params)
        if device.startswith("cuda"):
            inner = step

            def step(inner: Callable[[], None] = inner) -> None:
                inner()
                torch.cuda.synchronize()

        steps[entry.name] = step
    load0 = os.getloadavg()[0]
    times = interleaved_samples(steps, repeats, warmup=3)
    base = rows[0][0].name
    print(f"\n## {title}   (baseline: {base}; {repeats} interleaved rounds; load average "
          f"{load0:.2f} -> {os.getloadavg()[0]:.2f})")  # fmt: skip
    head = f"{'layer':20s} {'params':>7s} {'median ms':>10s} {'x base':>7s} {'IQR of x':>13s} "
    print(head + f"{'x (min)':>8s} {'saved KiB':>10s} {'x base':>7s} {'cuda peak':>10s}  note")
    saved0 = max(saved_bytes(rows[0][0].forward), 1)
    summary: dict[str, tuple[float, ...]] = {}
    for entry, _ in rows:
        t = times[entry.name]
        ratios = sorted(a / b for a, b in zip(t, times[base], strict=True))
        q1, q3 = statistics.quantiles(ratios, n=4)[0], statistics.quantiles(ratios, n=4)[2]
        summary[entry.name] = (statistics.median(ratios), q1, q3)
        sb = saved_bytes(entry.forward)
        print(f"{entry.name:20s} {entry.params:7d} {statistics.median(t) * 1e3:10.3f} "
              f"{statistics.median(ratios):7.2f} {f'{q1:.2f}-{q3:.2f}':>13s} "
              f"{min(t) / min(times[base]):8.2f} "
              f"{sb / 1024:10.1f} {sb / saved0:7.2f} {_peak(steps[entry.name], device):>10s}"
              f"  {entry.note}")  # fmt: skip
    for s in skipped:
        print(f"skipped {s}")
    return summary


def print_sweep(results: dict[int, dict[str, tuple[float, ...]]]) -> None:
    """One table: each KAN row's median step-time ratio to the MLP (IQR) at every width run."""
    widths = sorted(results)
    names = [n for n in next(iter(results.values())) if not n.startswith("mlp")]
    print("\n## width sweep: step time x mlp(gelu) of equal parameters, median (IQR)")
    print(f"{'layer':20s} " + " ".join(f"{f'D={d}':>17s}" for d in widths))
    for n in names:
        cells = []
        for d in widths:
            r = results[d].get(n)
            cells.append(f"{r[0]:5.2f} ({r[1]:.2f}-{r[2]:.2f})" if r else "-")
        print(f"{n:20s} " + " ".join(f"{c:>17s}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--groups", default="transformer,fit,attention,norm")
    ap.add_argument(
        "--widths", default=WIDTHS, help="D values of the width group (transformer slot)"
    )
    ap.add_argument(
        "--batch",
        type=int,
        default=64,
        help="leading dimension of the transformer-slot / attention inputs (64 x 17 tokens by "
        "default; larger batches leave the launch-bound regime of a GPU)",
    )
    ap.add_argument(
        "--compile", action="store_true", help="add a torch.compile'd relu_kan row (slow start)"
    )
    ap.add_argument(
        "--plain", action="store_true", help="add the KANs' torch paths (fused=False) as rows"
    )
    ap.add_argument(
        "--no-input-grad",
        action="store_true",
        help="no input gradient in the in-network slots (transformer, attention, norm): the "
        "step definition of the figures before 2026-12-05, evening",
    )
    args = ap.parse_args()
    global BATCH, COMPILE, PLAIN, INPUT_GRAD
    COMPILE, PLAIN, INPUT_GRAD = args.compile, args.plain, not args.no_input_grad
    if args.batch < 1:
        sys.exit(f"bench_layers: --batch takes a positive integer, got {args.batch}")
    BATCH = args.batch
    torch.set_num_threads(args.threads)
    keys = [g.strip() for g in args.groups.split(",") if g.strip()]
    bad = [k for k in keys if k not in GROUPS and k != "width"]
    if bad:
        sys.exit(
            f"bench_layers: unknown group {', '.join(bad)}; choose from {', '.join(GROUPS)}, width"
        )
    try:
        widths = [int(w) for w in args.widths.split(",") if w.strip()]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        sys.exit(
            f"bench_layers: --widths takes positive integers like {WIDTHS}, got {args.widths!r}"
        )
    isa = kan_native.kernel_isa() or f"unavailable ({kan_native.unavailable_reason()})"
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"KAN kernels {isa}; input gradients: "
          f"{'in-network slots' if INPUT_GRAD else 'none (--no-input-grad)'}; "
          "preliminary: shared machine")  # fmt: skip
    sweep: dict[int, dict[str, tuple[float, ...]]] = {}
    for key in keys:
        if key != "width":
            title, build = GROUPS[key]
            summary = run_group(title.replace("(64, ", f"({BATCH}, "), build, args.repeats,
                                args.device)  # fmt: skip
            if key == "phases":
                print_phases(summary)
            continue
        for d in widths:  # every width given is run and reported
            title = f"width sweep: mlp-slot (transformer) x ({BATCH}, 17, {d}), D {d}"
            sweep[d] = run_group(title, group_width(d), args.repeats, args.device)
    if sweep:
        print_sweep(sweep)


if __name__ == "__main__":
    main()
