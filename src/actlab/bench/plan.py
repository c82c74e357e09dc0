"""The run matrix of a comparison: one :class:`RunSpec` per (activation, seed).

A run is identified by ``(task, model, activation, seed, epochs, config_hash)``: the same
six fields form the unique key of the results store, so asking for a run that already
finished (in this study or any other) reuses its result.

- ``activation`` is the canonical spec (:func:`canonical_activation`): registry name after
  alias resolution, keyword arguments sorted, so ``"CRReLU()"`` and ``"crrelu"`` are one run.
  A bare formula of :mod:`actlab.expr` (``"x*sigmoid(1.702*x)"``: it uses ``x`` and is not
  a registered name) stands for ``expr(formula=...)`` with the canonical formula
  (:func:`formula_spec`), so the two spellings are one run too.
- A plan holds at most :data:`MAX_SEEDS` seeds (each in ``0..MAX_SEED``) and
  :data:`MAX_RUNS` runs; larger requests are refused before anything is built.
- ``model`` is ``"default"`` when the task's default model is used; ``epochs`` is 0 for the
  task's default number of epochs.
- ``config`` holds every other setting that can change the result (device, dtype,
  max_steps, ...); ``config_hash`` is the first 16 hex digits of the SHA-256 of its
  canonical JSON.
- Model overrides (``--set model.norm_layer=rmsnorm``, :func:`parse_set_overrides`) are
  checked and written canonically by :func:`model_overrides_config` into
  ``config["model_kwargs"]`` (keys sorted, layer specs canonical): another norm layer is
  another run, the same overrides in another order the same run. No overrides add nothing,
  so runs planned before overrides existed keep their keys.
- An *arm* (:func:`parse_arm`, :func:`resolve_arms`) is one row of the comparison:
  ``[LABEL=]ACT[@model.KEY=VALUE ...]``, an activation with its own model overrides and a
  label, e.g. ``relu_kan=silu@model.mlp_layer=relu_kan``. The arm's overrides are merged
  over the global ones (the arm's value wins for its key) and written into that arm's
  ``config["model_kwargs"]``, so arms with one activation and different layers are different
  runs. The label (:attr:`RunSpec.arm`) names the row in tables and is not part of the
  key: ``mlp=silu`` is the same run as ``silu``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ARM_SEP",
    "DEFAULT_DB",
    "DEFAULT_MODEL",
    "Arm",
    "RunSpec",
    "canonical_activation",
    "config_hash",
    "formula_spec",
    "model_overrides_config",
    "parse_arm",
    "parse_seeds",
    "parse_set_overrides",
    "plan_runs",
    "resolve_arms",
]

DEFAULT_MODEL = "default"
DEFAULT_DB = "actlab-results.sqlite"  # the results database of `actlab compare`
MAX_SPEC_LEN = 255  # the activation column of the results store
MAX_SEEDS = 10_000  # seeds of one comparison
MAX_SEED = 2**31 - 1  # largest seed (torch, numpy and every SQL integer column take it)
MAX_RUNS = 100_000  # activations x seeds of one comparison
MAX_EPOCHS = 100_000  # epochs of one run


def canonical_activation(spec: str) -> str:
    """The canonical form of an activation spec; raises ``ValueError`` for unknown names.

    :func:`actlab.registry.canonical_spec`: defaults left out, numbers normalised to their
    parameter's type, keys sorted (``crrelu``, ``crrelu(eps=0.01)`` and ``crrelu(eps=1e-2)`` are
    one run; so are ``eps=1`` and ``eps=1.0``). The spec is built once with
    :func:`actlab.create_activation`, so bad parameters fail here, before any training starts.
    """
    from actlab.registry import canonical_spec

    if not isinstance(spec, str):
        raise ValueError(
            f"compare needs activation specs as strings (got {type(spec).__name__}); "
            "register custom classes with actlab.register_activation and pass their name"
        )
    if _is_act_layer(spec):  # a shaped activation of the layer registry (polynorm)
        from actlab.layers import canonical_layer_spec

        text = canonical_layer_spec(spec)
    else:
        text = canonical_spec(spec)
    if len(text) > MAX_SPEC_LEN:
        raise ValueError(
            f"activation spec {spec!r} is longer than {MAX_SPEC_LEN} characters; "
            "register it under a short name with actlab.register_activation"
        )
    return text


def _is_act_layer(spec: str) -> bool:
    """Whether ``spec`` names a layer of kind ``act`` (not elementwise; e.g. polynorm)."""
    from actlab.layers import LAYERS
    from actlab.registry import parse_spec

    try:
        name, _ = parse_spec(spec)
    except ValueError:
        return False
    return name in LAYERS and LAYERS.get(name).kind == "act"


def _uses_x(expr: Any) -> bool:
    from actlab.expr import Var
    from actlab.expr.grammar import nodes

    return any(isinstance(n, Var) for _, n in nodes(expr))


def _keyword_call_of_registered(text: str) -> bool:
    """Whether ``text`` is a call with keyword arguments of a registered activation."""
    import ast

    from actlab.registry import ActivationSpecError, get_activation_info

    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.keywords):
        return False
    try:
        get_activation_info(tree.func.id)
    except ActivationSpecError:
        return _is_act_layer(tree.func.id)
    return True


def _canonical_formula(text: str) -> str:
    from actlab.expr import canonical, parse, to_string

    return to_string(canonical(parse(text)))


def formula_spec(spec: str) -> str:
    """``spec`` itself, or ``expr(formula="...")`` for a bare formula of :mod:`actlab.expr`.

    A bare formula uses ``x`` and is not a registered name or call (``"x*sigmoid(1.702*x)"``);
    it is parsed by the safe parser of :mod:`actlab.expr` (never evaluated) and written in
    canonical form. :func:`canonical_activation` then keys ``expr`` specs by the canonical
    formula, so both spellings are one run. Raises ``ValueError`` (one line) for text that
    is neither a spec nor a formula in ``x``.
    """
    from actlab.expr import ExprError, parse
    from actlab.registry import ActivationSpecError, get_activation_info, parse_spec

    if not isinstance(spec, str):
        return spec
    text = spec.strip()
    try:
        name, _ = parse_spec(text)
    except ActivationSpecError as e:
        spec_error: ActivationSpecError | None = e
    else:
        spec_error = None
        try:
            get_activation_info(name)
            return text  # a registered name or call
        except ActivationSpecError:
            pass
    if spec_error is not None and _keyword_call_of_registered(text):
        raise spec_error  # e.g. crrelu(eps=nan): the spec's own error says what to fix
    # not a registered name or call: a formula in x?
    try:
        expr = parse(text)
    except (ExprError, RecursionError, MemoryError) as e:
        if spec_error is None:
            return text  # an unknown name: canonical_activation says so, with close matches
        why = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". Write a")[0]
        raise ValueError(
            f"activation {text!r} is neither a registered name, a call 'name(key=value, ...)' "
            f"nor a formula in x ({why}); write e.g. gelu, 'crrelu(eps=0.02)', "
            "'x*sigmoid(1.702*x)' or 'expr(formula=\"x*sigmoid(1.702*x)\")'"
        ) from None
    if not _uses_x(expr):
        raise ValueError(
            f"activation {text!r}: a formula must use the input x, e.g. x*sigmoid(1.702*x)"
        )
    return f'expr(formula="{_canonical_formula(text)}")'


SET_PREFIX = "model."  # the only section --set reaches today
MAX_SET_ITEMS = 64


def _set_value(text: str) -> Any:
    """A Python literal (``6``, ``2.0``, ``True``, ``(64, 32)``), else the text itself."""
    import ast

    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        return text.strip()


def parse_set_overrides(items: Sequence[str], *, what: str = "--set") -> dict[str, Any]:
    """``["model.norm_layer=rmsnorm", "model.depth=6"]`` -> a dict of model keyword overrides.

    The example gives ``{"norm_layer": "rmsnorm", "depth": 6}``.

    A value is a Python literal when it parses as one (numbers, True/False, tuples, quoted
    strings), else the text (a layer spec such as ``glu(act='silu')``); nothing is evaluated.
    Keys must start with ``model.``; a key given twice is refused. ``what`` names the source
    in errors (``--set``, or an arm).
    """
    if isinstance(items, str):
        items = [items]
    if len(items) > MAX_SET_ITEMS:
        raise ValueError(f"{what}: at most {MAX_SET_ITEMS} overrides, got {len(items)}")
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{what} takes KEY=VALUE strings, got {type(item).__name__}")
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise ValueError(
                f"{what} {item[:60]!r}: write KEY=VALUE, e.g. model.norm_layer=rmsnorm"
            )
        if not key.startswith(SET_PREFIX) or key == SET_PREFIX:
            raise ValueError(
                f"{what} {key[:60]!r}: keys start with {SET_PREFIX!r}, e.g. model.norm_layer "
                "(a wrong key lists the valid ones)"
            )
        name = key[len(SET_PREFIX) :]
        if name in out:
            raise ValueError(f"{what}: {key} is given twice")
        out[name] = _set_value(value)
    return out


# ---------------------------------------------------------------------------------- arms
ARM_SEP = "@"  # never part of an activation spec or formula (the formula parser refuses @)
MAX_LABEL_LEN = 64
_LABEL = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.+\-]*)\s*=(?!=)")
ARM_HELP = (
    "write an arm as [LABEL=]ACT[@model.KEY=VALUE ...], e.g. "
    "'relu_kan=silu@model.mlp_layer=relu_kan'"
)


def _split_top(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside quotes and brackets."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_arm(text: str) -> tuple[str | None, str, dict[str, Any]]:
    """``"[LABEL=]ACT[@model.KEY=VALUE ...]"`` -> ``(label or None, ACT, own overrides)``.

    ``"relu_kan=silu@model.mlp_layer=relu_kan"`` gives
    ``("relu_kan", "silu", {"mlp_layer": "relu_kan"})``; a plain ``"gelu"`` gives
    ``(None, "gelu", {})``. A label is a name (letters, digits, ``_ . + -``, not starting with
    a digit) before the first ``=``, so ``crrelu(eps=0.02)`` is never read as one. ``@`` is
    split outside quotes and brackets. Nothing is checked against the model here
    (:func:`resolve_arms` does).
    """
    if not isinstance(text, str):
        raise ValueError(
            f"compare needs activation specs as strings (got {type(text).__name__}); "
            "register custom classes with actlab.register_activation and pass their name"
        )
    label = None
    rest = text
    m = _LABEL.match(text)
    if m is not None:
        label, rest = m.group(1), text[m.end() :]
        if len(label) > MAX_LABEL_LEN:
            raise ValueError(f"arm {text[:80]!r}: a label is at most {MAX_LABEL_LEN} characters")
    parts = _split_top(rest, ARM_SEP)
    act = parts[0].strip()
    if not act:
        raise ValueError(
            f"arm {text[:80]!r} names no activation (a registered name, a call string or a "
            f"formula in x); {ARM_HELP}"
        )
    if len(parts) > 1 and not all(p.strip() for p in parts[1:]):
        raise ValueError(f"arm {text[:80]!r} has an empty override after {ARM_SEP!r}; {ARM_HELP}")
    own = parse_set_overrides([p.strip() for p in parts[1:]], what=f"arm {text[:80]!r}: override")
    return label, act, own


@dataclass(frozen=True)
class Arm:
    """One row of a comparison: a canonical activation, its model overrides and its label.

    ``model_kwargs`` are the run's overrides after merging (global ones, then the arm's
    own), canonical; ``own`` are the arm's own keys (canonical values), which its default
    label shows.
    """

    activation: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    own: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def spec(self) -> str:
        """The canonical arm: ``silu@model.mlp_layer=relu_kan`` (the activation alone if no
        own overrides); the default label."""
        tail = "".join(f"{ARM_SEP}{SET_PREFIX}{k}={_fmt_value(v)}" for k, v in self.own.items())
        return self.activation + tail


def _fmt_value(v: Any) -> str:
    return v if isinstance(v, str) else repr(v).replace(" ", "")


def resolve_arms(
    texts: Iterable[str],
    *,
    task: str,
    model: str | None,
    overrides: dict[str, Any] | None = None,
) -> list[Arm]:
    """Parse, check and canonicalise the arms of a comparison (first = baseline).

    Each arm's own overrides are merged over ``overrides`` (the global ``--set``; the arm's
    value wins for its key) and checked against the model (:func:`model_overrides_config`),
    so unknown keys and bad layer specs fail here, one line naming the arm. Labels default
    to :attr:`Arm.spec`; two arms with one label are refused (two arms that are the same
    runs are refused by :func:`plan_runs`).
    """
    glob = {
        (k[len(SET_PREFIX) :] if k.startswith(SET_PREFIX) else k): v
        for k, v in (overrides or {}).items()
    }
    glob_kw = model_overrides_config(task, model, glob).get("model_kwargs", {})
    arms: list[Arm] = []
    for text in texts:
        label, act_text, own = parse_arm(text)
        act = canonical_activation(formula_spec(act_text))
        kw = glob_kw
        if own:
            try:
                kw = model_overrides_config(task, model, {**glob, **own})["model_kwargs"]
            except ValueError as e:
                raise ValueError(f"arm {text[:80]!r}: {e}") from None
        arm = Arm(act, kw, {k: kw[k] for k in sorted(own)})
        arms.append(Arm(act, kw, arm.own, label or arm.spec))
    if not arms:
        raise ValueError("name at least one activation, e.g. `actlab compare relu gelu`")
    _check_distinct(arms)
    return arms


def _check_distinct(arms: Sequence[Arm]) -> None:
    """Labels name rows, so they are distinct (same runs are refused by :func:`plan_runs`)."""
    seen: set[str] = set()
    for a in arms:
        if a.label in seen:
            what = "activation" if a.label == a.activation else "arm label"
            raise ValueError(f"{what} listed twice: {a.label}")
        seen.add(a.label)


def model_overrides_config(
    task: str, model: str | None, overrides: dict[str, Any] | None
) -> dict[str, Any]:
    """The config entries of a run's model overrides: ``{"model_kwargs": {...}}`` or ``{}``.

    ``model`` is a preset name (None: the task's default model). Keys and values are checked
    by :func:`actlab.models.factory.check_model_overrides` (one-line errors naming the valid
    keys) before anything trains.
    """
    if not overrides:
        return {}
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise ValueError("model overrides are a dict of option name -> value")
    from actlab.models.factory import check_model_overrides

    if model is None or model == DEFAULT_MODEL:
        from actlab.train import get_task

        model = get_task(task).resolve_model(None)
    overrides = {
        k[len(SET_PREFIX) :] if k.startswith(SET_PREFIX) else k: v for k, v in overrides.items()
    }
    return {"model_kwargs": check_model_overrides(model, overrides)}


def config_hash(config: dict[str, Any]) -> str:
    """16 hex digits identifying a config dict (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class RunSpec:
    """One training run of the matrix: what to train and how (equal when keys are equal)."""

    task: str
    model: str
    activation: str
    seed: int
    epochs: int
    config: dict[str, Any] = field(default_factory=dict)
    arm: str = ""  # the arm's label in tables, not part of the key ("": the activation)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunSpec) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    @property
    def key(self) -> tuple[str, str, str, int, int, str]:
        """The unique key of the results store."""
        return (self.task, self.model, self.activation, self.seed, self.epochs, self.config_hash)

    @property
    def key_hash(self) -> str:
        """A short digest of :attr:`key`, used to name claims."""
        return hashlib.sha256(json.dumps(list(self.key)).encode()).hexdigest()[:32]

    @property
    def arm_label(self) -> str:
        """The row this run belongs to: its arm's label, else its activation."""
        return self.arm or self.activation

    def label(self) -> str:
        return f"{self.arm_label} seed={self.seed}"


def _seed_count(n: int, text: object) -> int:
    if n > MAX_SEEDS:
        raise ValueError(
            f"--seeds {text}: at most {MAX_SEEDS} seeds per comparison; "
            "split a larger study into several commands with explicit seed lists"
        )
    return n


def parse_seeds(seeds: int | str | Sequence[int]) -> list[int]:
    """``3`` -> ``[0, 1, 2]``; ``"0,3,7"`` or ``[0, 3, 7]`` -> those seeds (duplicates refused).

    At most :data:`MAX_SEEDS` seeds, each in ``0..MAX_SEED``; a count is checked before any
    list is built, so ``--seeds 100000000`` is refused at once.
    """
    if isinstance(seeds, bool):
        raise ValueError("seeds must be a count or a list of integers")
    if isinstance(seeds, int):
        out = list(range(_seed_count(seeds, seeds)))
    elif isinstance(seeds, str):
        text = seeds.strip()
        try:
            if "," in text:
                parts = text.split(",")
                _seed_count(len(parts), repr(seeds))
                out = [int(s) for s in parts]
            else:
                out = list(range(_seed_count(int(text), text)))
        except ValueError as e:
            if "at most" in str(e):
                raise
            raise ValueError(
                f"--seeds {seeds!r}: give a count (e.g. 5) or a comma list (e.g. 0,3,7)"
            ) from None
    else:
        items = list(seeds)
        _seed_count(len(items), f"({len(items)} seeds)")
        try:
            out = [int(s) for s in items]
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"seeds must be integers, got {items[:5]}") from None
        if any(float(s) != o for s, o in zip(items, out, strict=True)):
            raise ValueError(f"seeds must be whole numbers, got {items[:5]}")
    if not out:
        raise ValueError("need at least one seed (e.g. --seeds 3)")
    if len(set(out)) != len(out):
        dupes = sorted({s for s in out if out.count(s) > 1})[:5]
        raise ValueError(f"duplicate seeds: {dupes}")
    bad = [s for s in out if not 0 <= s <= MAX_SEED]
    if bad:
        raise ValueError(f"seeds must be in 0..{MAX_SEED}, got {bad[0]}")
    return out


def plan_runs(
    activations: Iterable[str | Arm],
    seeds: int | str | Sequence[int],
    *,
    task: str,
    model: str | None = None,
    epochs: int | None = None,
    config: dict[str, Any] | None = None,
) -> list[RunSpec]:
    """The arm x seed matrix, seed-major (every arm of seed 0 first).

    ``activations`` are activation specs (each run gets ``config``) or resolved arms
    (:func:`resolve_arms`; each run gets ``config`` with the arm's ``model_kwargs`` in place
    of the global ones, and the arm's label). Seed-major order means an interrupted
    comparison already holds complete pairs.
    """
    cfg = dict(config or {})
    items = list(activations)
    if not items:
        raise ValueError("name at least one activation, e.g. `actlab compare relu gelu`")
    arms = [
        a if isinstance(a, Arm) else Arm(canonical_activation(formula_spec(a)), label="")
        for a in items
    ]
    plain = [not isinstance(a, Arm) for a in items]
    configs = [cfg if p else _arm_config(cfg, a) for a, p in zip(arms, plain, strict=True)]
    seen: dict[tuple[str, str], Arm] = {}
    for a, c in zip(arms, configs, strict=True):
        run = (a.activation, config_hash(c))
        if run in seen:
            if not (seen[run].label or a.label):
                raise ValueError(f"activation listed twice: {a.activation}")
            first = seen[run].label or seen[run].activation
            raise ValueError(
                f"arms {first!r} and {a.label or a.activation!r} are the same runs "
                f"({a.activation} with the same model overrides); drop one"
            )
        seen[run] = a
    if not task:
        raise ValueError("a task is required, e.g. --task digits-mlp")
    if epochs is not None and not 1 <= epochs <= MAX_EPOCHS:
        raise ValueError(f"epochs must be in 1..{MAX_EPOCHS}, got {epochs}")
    seed_list = parse_seeds(seeds)
    if len(arms) * len(seed_list) > MAX_RUNS:
        raise ValueError(
            f"{len(arms)} activations x {len(seed_list)} seeds = "
            f"{len(arms) * len(seed_list)} runs; one comparison holds at most {MAX_RUNS}"
        )
    labels = [a.label if a.label != a.activation else "" for a in arms]
    return [
        RunSpec(task, model or DEFAULT_MODEL, a.activation, seed, int(epochs or 0), c, lab)
        for seed in seed_list
        for a, c, lab in zip(arms, configs, labels, strict=True)
    ]


def _arm_config(config: dict[str, Any], arm: Arm) -> dict[str, Any]:
    """``config`` with the arm's model overrides in place of the global ones."""
    out = {k: v for k, v in config.items() if k != "model_kwargs"}
    if arm.model_kwargs:
        out["model_kwargs"] = dict(arm.model_kwargs)
    return out
