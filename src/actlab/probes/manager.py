"""The probe manager: owns the hooks, the sampling seeds, the memory bounds and the logs.

    with actlab.probe(model, probes=["sparsity", "massive"], sample=256, seed=0) as p:
        model(x)
    p.summary().print()          # tidy table: one row per (probe, layer[, head])
    p.log(step)                  # append to the JSONL / CSV file given as log_to=

Sites: each probe attaches to the modules matching its own ``where`` globs, else the
manager's ``where`` globs, else its default target (activation modules, transformer blocks,
attention modules, routers; see :mod:`actlab.probes.sites`). One forward hook per module
serves all its probes (a forward *pre*-hook for probes reading the input of an in-place
module), and every hook is removed on exit, also when the body raises. Hooks run with grad
disabled and never modify what they read, so they change neither outputs nor gradients,
and they work on pretrained models in eval mode. Probe ops run with one intra-op CPU thread
(the previous thread count is restored after each hook).

Padding: two more hooks on the root module (a pre-hook with kwargs and a forward hook that
always runs) hold the ``attention_mask=`` keyword of the call in progress in
``ProbeContext.forward_mask``; probes then count only the real tokens of (B, T, ...) outputs
whose (B, T) matches the mask (see ``ProbeContext.token_mask``).

Memory: every probe keeps fixed-size state (running sums, per-unit vectors, reservoirs of at
most ``max_tokens`` rows, top-k lists), so it does not grow with the number of steps.

The trainer callback :class:`ProbeCallback` (usage: :mod:`actlab.probes.callback`) lives
here beside the manager it creates.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, overload

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from actlab.probes.base import (
    Probe,
    ProbeArgumentError,
    ProbeContext,
    _as_globs,
    check_int,
    match_any,
)
from actlab.probes.sites import find_sites, glob_sites
from actlab.probes.table import ProbeTable, scalar_items
from actlab.registry import Registry, RegistryError

__all__ = [
    "DEFAULT_PROBES",
    "PROBES",
    "ProbeCallback",
    "ProbeManager",
    "UnknownProbeKeyError",
    "default_probes",
    "make_probe",
    "probe",
    "register_probe",
]

Mode = Literal["both", "train", "eval"]
P = TypeVar("P", bound=Probe)


#: every probe class by name (its ``name`` attribute), with a one-line ``description``; filled
#: by :func:`register_probe` in the module defining each probe (every module of this folder is
#: imported before the first lookup, so adding a probe is adding one file here)
PROBES: Registry[type[Probe]] = Registry(
    "probe",
    loader="actlab.probes.*",
    error=ProbeArgumentError,
    hint="Any Probe subclass registered with register_probe() is available too.",
    cutoff=0.6,
)

DEFAULT_PROBES = ("sparsity", "distribution", "massive", "attention")
_LOG_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv")


class UnknownProbeKeyError(KeyError, ValueError):
    """A probe key that is not in this manager (a KeyError and a ValueError, printed plainly)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@overload
def register_probe(cls: type[P], description: str = "", **meta: Any) -> type[P]: ...


@overload
def register_probe(
    cls: None = None, description: str = "", **meta: Any
) -> Callable[[type[P]], type[P]]: ...


def register_probe(
    cls: type[P] | None = None, description: str = "", **meta: Any
) -> type[P] | Callable[[type[P]], type[P]]:
    """Make a Probe subclass available by its ``name`` (``probes=["mine"]``, ``actlab probe
    --probes mine``) in :data:`PROBES`. A class decorator, bare or with arguments:
    ``@register_probe`` or ``@register_probe(description="...", needs_labels=True)``.

    ``description`` defaults to the first line of the docstring; ``meta`` is stored with it
    (``PROBES.meta(name)``). Registering a name again replaces the earlier probe.
    """
    if cls is None:
        return lambda c: register_probe(c, description, **meta)
    if not (isinstance(cls, type) and issubclass(cls, Probe)):
        raise TypeError(f"register_probe needs a Probe subclass, got {cls!r}")
    if not cls.name or cls.name == Probe.name:
        raise ValueError(f"{cls.__name__} needs its own class attribute `name`")
    text = description or (cls.__doc__ or cls.__name__).strip().splitlines()[0]
    try:
        PROBES.add(cls.name, cls, description=text, **meta)
    except RegistryError:  # a second registration of the name replaces the first
        PROBES.remove(cls.name)
        PROBES.add(cls.name, cls, description=text, **meta)
    return cls


def make_probe(spec: str | Probe | type[Probe]) -> Probe:
    """A probe from a name in :data:`PROBES`, a Probe class or an instance."""
    if isinstance(spec, Probe):
        return spec
    if isinstance(spec, type) and issubclass(spec, Probe):
        return spec()
    if isinstance(spec, str):
        return PROBES.get(spec)()
    raise ProbeArgumentError(f"a probe is a name, a Probe class or a Probe instance, got {spec!r}")


def default_probes() -> list[Probe]:
    """Fresh instances of the cheap default set: sparsity, distribution, massive, attention."""
    return [make_probe(n) for n in DEFAULT_PROBES]


class ProbeManager:
    """Attach probes to a model with forward hooks; summarise, log, detach."""

    def __init__(
        self,
        model: nn.Module,
        probes: Sequence[str | Probe | type[Probe]] | None = None,
        *,
        where: str | list[str] | None = None,
        sample: int = 64,
        seed: int = 0,
        max_tokens: int = 2048,
        every: int = 1,
        train_stride: int = 4,
        mode: Mode = "both",
        log_to: str | os.PathLike[str] | None = None,
        tensorboard: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ProbeArgumentError(f"probe() needs an nn.Module, got {type(model).__name__}")
        sample, max_tokens = check_int("sample", sample), check_int("max_tokens", max_tokens)
        every, train_stride = check_int("every", every), check_int("train_stride", train_stride)
        seed = check_int("seed", seed, lo=0)
        if mode not in ("both", "train", "eval"):
            raise ProbeArgumentError(f"mode must be 'both', 'train' or 'eval', got {mode!r}")
        if log_to is not None and not os.fspath(log_to).lower().endswith(_LOG_SUFFIXES):
            raise ProbeArgumentError(
                f"log file must end in .jsonl or .csv, got {os.fspath(log_to)!r}"
            )
        if tensorboard is not None:
            _tensorboard_writer_class()  # fails now, not at the first log, when it is missing
        self.model = model
        if isinstance(probes, (str, Probe)) or (
            isinstance(probes, type) and issubclass(probes, Probe)
        ):
            probes = [probes]
        if probes is not None and not isinstance(probes, Sequence):
            raise ProbeArgumentError(
                f"probes= takes a list of probe names, classes or instances, got {probes!r}"
            )
        specs = list(DEFAULT_PROBES) if probes is None else list(probes)
        if not specs:
            raise ProbeArgumentError(
                f"probes= lists no probe; available: {', '.join(PROBES.names())}"
            )
        self.probes: dict[str, Probe] = {}
        for spec in specs:
            p = make_probe(spec)
            key, i = p.name, 1
            while key in self.probes:
                key, i = f"{p.name}_{i}", i + 1
            self.probes[key] = p
        self.where = _as_globs(where)
        self.ctx = ProbeContext(
            seed=seed, sample=sample, max_tokens=max_tokens, train_stride=train_stride
        )
        self.every, self.mode = every, mode
        self.log_to = log_to
        self.tensorboard = tensorboard
        self._writer: Any = None
        self.enabled = True
        self.sites: dict[str, list[str]] = {}
        self._handles: list[RemovableHandle] = []
        self._calls: dict[tuple[int, str], int] = {}
        self._masks: list[Any] = []  # forward_mask of the enclosing root calls (re-entrancy)

    # -- attach / detach ---------------------------------------------------------------
    def __enter__(self) -> ProbeManager:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> ProbeManager:
        """Find the sites and register the hooks (removes them all if anything fails).

        One forward hook per module serves every probe on it: probes reading the module's
        input get ``args[0]`` there, except on modules marked ``inplace=True`` (the input is
        overwritten by then), which get a forward pre-hook instead.
        """
        if self._handles:
            raise RuntimeError("probes are already attached; detach() first")
        try:
            mods: dict[int, nn.Module] = {}
            post: dict[int, list[tuple[Probe, str, bool]]] = {}
            pre: dict[int, list[tuple[Probe, str, bool]]] = {}
            for key, p in self.probes.items():
                p.bind(self.ctx)
                globs = p.where or self.where
                if globs:
                    self._check_globs(globs, "where" if p.where is None else f"{key}'s where")
                cands = glob_sites(self.model, globs) if globs else find_sites(self.model, p.target)
                sites = p.resolve_sites(cands)
                self.sites[key] = [label for label, _ in sites]
                for label, mod in sites:
                    mods[id(mod)] = mod
                    wants_input = p.site == "input"
                    table = pre if wants_input and getattr(mod, "inplace", False) else post
                    table.setdefault(id(mod), []).append((p, label, wants_input))
            for mid, targets in pre.items():
                self._handles.append(mods[mid].register_forward_pre_hook(self._pre_hook(targets)))
            for mid, targets in post.items():
                self._handles.append(mods[mid].register_forward_hook(self._post_hook(targets)))
            # the root call's attention_mask keyword: padded tokens are left out of per-token
            # statistics (see ProbeContext.token_mask)
            self._handles.append(
                self.model.register_forward_pre_hook(self._root_enter, with_kwargs=True)
            )
            self._handles.append(
                self.model.register_forward_hook(self._root_exit, always_call=True)
            )
        except BaseException:
            self.detach()
            raise
        return self

    def _check_globs(self, globs: tuple[str, ...], what: str) -> None:
        names = [n for n, _ in self.model.named_modules() if n]
        if not any(match_any(n, globs) for n in names):
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            g = globs[0] if len(globs) == 1 else list(globs)
            raise ProbeArgumentError(
                f"{what}={g!r} matches no module of {type(self.model).__name__}; "
                f"names look like: {shown or '(no submodules)'}"
            )

    def _root_enter(self, module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        self._masks.append(self.ctx.forward_mask)
        mask = kwargs.get("attention_mask")
        self.ctx.forward_mask = mask if isinstance(mask, torch.Tensor) and mask.ndim == 2 else None

    def _root_exit(self, module: nn.Module, args: Any, output: Any) -> None:
        self.ctx.forward_mask = self._masks.pop() if self._masks else None

    def detach(self) -> None:
        """Remove every hook (idempotent)."""
        while self._handles:
            self._handles.pop().remove()
        if self._writer is not None:
            self._writer.flush()

    def _active(self, module: nn.Module, site: str) -> bool:
        if not self.enabled:
            return False
        if self.mode == "train" and not module.training:
            return False
        if self.mode == "eval" and module.training:
            return False
        key = (id(module), site)
        n = self._calls.get(key, 0)
        self._calls[key] = n + 1
        return n % self.every == 0

    @staticmethod
    def _dispatch(
        targets: list[tuple[Probe, str, bool]], module: nn.Module, args: Any, output: Any
    ) -> None:
        grad = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)  # cheaper than a no_grad() context per call
        # probe ops are small: run them on one intra-op thread. Waking a busy thread pool for
        # a 100 us reduction can cost milliseconds on a loaded machine.
        threads = torch.get_num_threads()
        if threads > 1:
            torch.set_num_threads(1)
        try:
            for p, label, wants_input in targets:
                value = (args[0] if args else None) if wants_input else output
                if value is None:
                    continue
                try:
                    p.update(label, module, value)
                except Exception as e:
                    raise RuntimeError(f"probe {p.name!r} failed on layer {label!r}: {e}") from e
        finally:
            torch._C._set_grad_enabled(grad)
            if threads > 1:
                torch.set_num_threads(threads)

    def _post_hook(self, targets: list[tuple[Probe, str, bool]]) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._active(module, "post"):
                self._dispatch(targets, module, args, output)

        return hook

    def _pre_hook(self, targets: list[tuple[Probe, str, bool]]) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            if self._active(module, "pre"):
                self._dispatch(targets, module, args, None)

        return hook

    # -- context, results ----------------------------------------------------------------
    def set_context(self, **extras: Any) -> None:
        """Side information for the next forward passes (replaces the previous context).

        ``labels``: (B,) class labels of the batch (InfoPlane, DSE). ``input_ids``: which input
        each sample is, for I(X;T): a (B,) integer tensor (e.g. dataset indices) or any (B, ...)
        tensor whose equal rows mean equal inputs (token ids of a text batch); without it the
        information plane reports H(T), an upper bound on I(X;T). ``attention_mask``: the
        (B, T) padding mask (1 = real token) when the model is not called with an
        ``attention_mask=`` keyword (which the manager captures by itself). Lists and arrays
        are converted to tensors.
        """
        clean: dict[str, Any] = {}
        for key, value in extras.items():
            clean[key] = _context_value(key, value) if key in _CONTEXT_DIMS else value
        self.ctx.extras.clear()
        self.ctx.extras.update(clean)

    def summary(self, probe: str | None = None) -> ProbeTable:
        """One tidy row per (probe, layer[, head]) as a :class:`ProbeTable`."""
        if probe is not None and probe not in self.probes:
            raise UnknownProbeKeyError(
                f"no probe {probe!r} in this manager; it has: {', '.join(self.probes)}"
            )
        rows: list[dict[str, Any]] = []
        for key, p in self.probes.items():
            if probe is not None and key != probe:
                continue
            for rk, row in p.summary().items():
                rows.append(
                    {
                        "probe": key,
                        "layer": row.get("layer", rk),
                        "key": rk,
                        **{k: v for k, v in row.items() if k != "layer"},
                    }
                )
        return ProbeTable(rows)

    def __getitem__(self, key: str) -> Probe:
        if key not in self.probes:
            raise UnknownProbeKeyError(
                f"no probe {key!r} in this manager; it has: {', '.join(self.probes)}"
            )
        return self.probes[key]

    def reset(self) -> None:
        """Forget all statistics (hooks stay attached)."""
        for p in self.probes.values():
            p.reset()

    def flush(self) -> None:
        """Reduce the samples staged by every probe (summary() does this too)."""
        for p in self.probes.values():
            p.flush()

    def nbytes(self) -> int:
        """Bytes held in tensors by all probes."""
        return sum(p.nbytes() for p in self.probes.values())

    def log(
        self, step: int, path: str | os.PathLike[str] | None = None, *, reset: bool = False
    ) -> ProbeTable:
        """Append the current summary with ``step`` to JSONL (.jsonl) or long CSV (.csv), and
        to TensorBoard when ``tensorboard=`` was given; optionally reset afterwards."""
        table = self.summary()
        target = path if path is not None else self.log_to
        if target is not None:
            suffix = os.fspath(target).lower()
            if suffix.endswith(".csv"):
                table.to_csv(target, step)
            elif suffix.endswith((".jsonl", ".json", ".ndjson")):
                table.to_jsonl(target, step)
            else:
                raise ProbeArgumentError(
                    f"log file must end in .jsonl or .csv, got {os.fspath(target)!r}"
                )
        if self.tensorboard is not None:
            self._tb_write(table, step)
        if reset:
            self.reset()
        return table

    def _tb_write(self, table: ProbeTable, step: int) -> None:
        if self._writer is None and self.tensorboard is not None:
            self._writer = _tensorboard_writer_class()(os.fspath(self.tensorboard))
        for r in table:
            for stat, v in scalar_items(r):
                self._writer.add_scalar(f"{r['probe']}/{r['key']}/{stat}", v, step)

    def callback(
        self, *, log_every: int | None = None, reset_each_epoch: bool = False
    ) -> ProbeCallback:
        """A trainer callback bound to this manager (see :class:`ProbeCallback`)."""
        return ProbeCallback(manager=self, log_every=log_every, reset_each_epoch=reset_each_epoch)


class ProbeCallback:
    """Attach probes when training starts, log them during and after each epoch."""

    def __init__(
        self,
        probes: Sequence[str | Probe | type[Probe]] | None = None,
        *,
        manager: ProbeManager | None = None,
        log_to: str | os.PathLike[str] | None = None,
        log_every: int | None = None,
        reset_each_epoch: bool = False,
        mode: Mode = "train",
        **manager_kw: Any,
    ) -> None:
        if manager is not None and (probes is not None or manager_kw):
            raise ValueError("pass either manager= or the probe settings, not both")
        self.manager = manager
        self._owns = manager is None
        self._settings = dict(manager_kw, mode=mode, log_to=log_to)
        self._probes = probes
        if manager is None:  # check every setting now, not at the first training forward
            ProbeManager(nn.Module(), probes, **self._settings)
        if log_every is not None:
            check_int("log_every", log_every)
        self.log_to = log_to
        self.log_every = log_every
        self.reset_each_epoch = reset_each_epoch
        self.history: list[ProbeTable] = []
        self._capture: RemovableHandle | None = None

    def _start(self, model: nn.Module) -> None:
        if self.manager is None:
            self.manager = ProbeManager(model, self._probes, **self._settings)
        if not self.manager.attached:
            self.manager.attach()

    def on_train_begin(self, info: dict[str, Any]) -> None:
        if self.manager is not None and not self._owns:
            return  # bound to a manager the user attached
        model = next(
            (
                v
                for k, v in info.items()
                if isinstance(v, nn.Module) and k in ("net", "model", "module")
            ),
            None,
        )
        if model is not None:
            self._start(model)
            return

        def capture(module: nn.Module, args: Any) -> None:
            self._release_capture()
            self._start(module)

        self._capture = nn.modules.module.register_module_forward_pre_hook(capture)

    def _release_capture(self) -> None:
        if self._capture is not None:
            self._capture.remove()
            self._capture = None

    def on_step_end(self, step: int, loss: Any) -> None:
        if self.manager is not None and self.log_every and step % self.log_every == 0:
            self.manager.log(step, self.log_to)

    def on_epoch_end(self, record: dict[str, Any], model: Any) -> None:
        if self.manager is None:
            return
        step = int(record.get("step", len(self.history)))
        table = self.manager.log(step, self.log_to, reset=False)
        for row in table:
            row["epoch"] = record.get("epoch", len(self.history) + 1)
        self.history.append(table)
        if self.reset_each_epoch:
            self.manager.reset()

    def on_train_end(self, result: Any) -> None:
        self._release_capture()
        if self.manager is not None and self._owns:
            self.manager.detach()

    def close(self) -> None:
        """Remove every hook this callback installed (also called at train end)."""
        self.on_train_end(None)


_CONTEXT_DIMS = {"labels": 1, "input_ids": 1, "attention_mask": 2}


def _context_value(key: str, value: Any) -> torch.Tensor:
    """A context tensor checked for its role: labels (B,), input_ids (B, ...), masks (B, T)."""
    if value is None:
        raise ProbeArgumentError(f"set_context({key}=None): leave {key} out instead")
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise ProbeArgumentError(
                f"set_context({key}=...) needs a tensor (or array / list "
                f"of numbers), got {type(value).__name__}"
            ) from None
    if value.dtype == torch.bool and key != "attention_mask":
        value = value.long()
    if value.is_complex():
        raise ProbeArgumentError(f"set_context({key}=...) needs real numbers, got {value.dtype}")
    want = _CONTEXT_DIMS[key]
    if key == "attention_mask" and value.ndim != 2:
        raise ProbeArgumentError(
            f"attention_mask must be (batch, seq), got shape {tuple(value.shape)}"
        )
    if key == "labels" and value.ndim != 1:
        value = value.reshape(-1) if value.ndim == 2 and value.shape[1] == 1 else value
        if value.ndim != 1:
            raise ProbeArgumentError(f"labels must be (batch,), got shape {tuple(value.shape)}")
    if value.ndim < want or value.shape[0] == 0:
        raise ProbeArgumentError(
            f"{key} must have a batch axis with >= 1 entry, got shape {tuple(value.shape)}"
        )
    if value.dtype.is_floating_point and not bool(torch.isfinite(value).all()):
        raise ProbeArgumentError(f"{key} holds nan or inf")
    return value


def _tensorboard_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(
            "tensorboard= needs the tensorboard package: pip install tensorboard"
        ) from e
    return SummaryWriter


def probe(
    model: nn.Module,
    probes: Sequence[str | Probe | type[Probe]] | None = None,
    *,
    where: str | list[str] | None = None,
    sample: int = 64,
    seed: int = 0,
    max_tokens: int = 2048,
    every: int = 1,
    train_stride: int = 4,
    mode: Mode = "both",
    log_to: str | os.PathLike[str] | None = None,
    tensorboard: str | os.PathLike[str] | None = None,
) -> ProbeManager:
    """A :class:`ProbeManager` for ``with``: hooks are attached on enter, removed on exit.

    ``probes``: names from :data:`PROBES`, classes or instances (default: sparsity,
    distribution, massive, attention). ``where``: glob(s) over module names replacing each
    probe's default sites. ``sample``: rows looked at per hook call; ``max_tokens``: rows
    kept per layer; ``seed``: the sampling seed; ``every``: probe every n-th call of each
    module (nothing at all on the others); ``train_stride``: in train mode, take sampled
    statistics on every n-th call only (exact ones, dead units and maxima, on every call);
    ``mode``: probe in train mode, eval mode or both.

    Padding: a pre-hook on ``model`` captures the ``attention_mask=`` keyword of each call, so
    padded tokens of (B, T, ...) outputs are left out of every per-token statistic. Side
    information per batch: ``set_context(labels=..., input_ids=..., attention_mask=...)``.
    Every argument is checked here (a one-line ``ValueError``: sizes are integers >= 1, the
    seed an integer >= 0, ``log_to`` ends in .jsonl or .csv); ``where`` globs that match no
    module fail when the hooks are attached.
    """
    return ProbeManager(
        model,
        probes,
        where=where,
        sample=sample,
        seed=seed,
        max_tokens=max_tokens,
        every=every,
        train_stride=train_stride,
        mode=mode,
        log_to=log_to,
        tensorboard=tensorboard,
    )
