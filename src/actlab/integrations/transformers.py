"""Hugging Face transformers: actlab activations as ``config.hidden_act`` values.

transformers builds activations with ``ACT2FN[config.hidden_act]`` (a ``ClassInstantier``
over ``transformers.activations.ACT2CLS``). :func:`register` adds actlab entries to both
tables, so that

    config.hidden_act = "crrelu"                  # builds actlab's CRReLU
    config.hidden_act = "crrelu(eps=0.02)"        # a call string: registered key by key
    config.hidden_act = "actlab:swish(beta=1.5)"  # "actlab:" picks actlab's module where
                                                  # transformers has its own of that name

transformers' own keys (gelu, silu, swish, relu, ...) are never overwritten.

Saving and loading a swapped model: after ``actlab.swap_activations`` (or any
``actlab.surgery.replace_modules``) the ``"transformers-config"`` replacement hook
(:func:`sync_hidden_act`) sets ``config.hidden_act`` to such a string and registers it, so
``save_pretrained`` writes a config that names the new activation and a state dict that holds its
parameters (CRReLU's ε). Registration lives in the process, so a process that *loads* the model must
register first:

    import actlab.integrations.transformers as t
    t.register()                                   # every zoo name
    t.register("crrelu(eps=0.02)")                  # or one call string
    model = AutoModel.from_pretrained(path)

or simply ``model = t.from_pretrained(path)``, which registers the activations its config
names before loading and picks the model class from ``config.architectures`` (a saved
``LlamaForCausalLM`` comes back with its LM head). transformers itself is imported only
inside these functions.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from actlab.registry import (
    ActivationSpecError,
    activation_aliases,
    canonical_name,
    create_activation,
    get_activation_info,
    list_activations,
    parse_spec,
)
from actlab.surgery import ReplacementReport, find_modules, identify_activation, on_replaced

__all__ = [
    "PREFIX",
    "from_pretrained",
    "hidden_act_for",
    "hidden_act_kind",
    "model_class",
    "register",
    "register_config",
    "sync_hidden_act",
]

PREFIX = "actlab:"
_CONFIG_ATTRS = ("hidden_act", "hidden_activation")
_HUB_KWARGS = (
    "cache_dir",
    "local_files_only",
    "revision",
    "subfolder",
    "token",
    "trust_remote_code",
)


def _activations() -> Any:
    try:
        import transformers.activations as acts
    except ImportError:
        raise ImportError(
            "actlab.integrations.transformers needs transformers: pip install 'actlab[hf]'"
        ) from None
    return acts


def _entry_class(value: object) -> type:
    cls = value[0] if isinstance(value, tuple) else value
    assert isinstance(cls, type)
    return cls


def _is_ours(value: object) -> bool:
    return bool(getattr(_entry_class(value), "activation_name", None))


def _entry(key: str) -> tuple[type[nn.Module], dict[str, Any]]:
    """``(class, kwargs)`` for an actlab name or call string, validated by building one."""
    spec = key[len(PREFIX) :] if key.startswith(PREFIX) else key
    create_activation(spec)  # raises ActivationSpecError with a helpful message
    name, kwargs = parse_spec(spec)
    return get_activation_info(name).cls, kwargs


def _equivalent(hf_value: object, module: nn.Module) -> bool:
    """True when transformers' entry computes the same function as a stateless ``module``."""
    if len(module.state_dict()) > 0:
        return False
    cls = _entry_class(hf_value)
    kwargs = hf_value[1] if isinstance(hf_value, tuple) else {}
    try:
        built = cls(**kwargs)
    except Exception:
        return False
    return identify_activation(built) == identify_activation(module) is not None


def register(spec: str | Iterable[str] | None = None) -> list[str]:
    """Make ``config.hidden_act = spec`` build the actlab activation; returns the keys added.

    ``spec`` is a registered name, a call string or either with the ``"actlab:"`` prefix;
    several may be given as a list. With no argument every zoo name and alias that
    transformers does not already define is registered. Keys transformers defines itself are
    left alone (with a warning when actlab's activation of that name differs from
    transformers'; use ``"actlab:<name>"`` for actlab's). Registering twice is harmless.
    """
    acts = _activations()
    explicit = spec is not None
    if spec is None:
        keys = list_activations() + sorted(activation_aliases())
    elif isinstance(spec, str):
        keys = [spec]
    else:
        keys = list(spec)
    added: list[str] = []
    for key in keys:
        if not isinstance(key, str) or not key.strip():
            raise ActivationSpecError(
                f"cannot register {key!r}: give an activation name or call string"
            )
        current = acts.ACT2CLS.get(key, dict.get(acts.ACT2FN, key))
        if current is not None and not _is_ours(current):
            if explicit:
                _warn_if_shadowed(key, current)
            continue
        entry = _entry(key)
        if current == entry and dict.get(acts.ACT2FN, key) == entry:
            continue
        acts.ACT2CLS[key] = entry
        acts.ACT2FN[key] = entry  # ACT2FN is a copy of ACT2CLS made at import: update both
        added.append(key)
    return added


def _warn_if_shadowed(key: str, current: object) -> None:
    try:
        ours = create_activation(key)
    except ActivationSpecError:
        return  # not an actlab name: nothing is shadowed
    if not _equivalent(current, ours):
        warnings.warn(
            f"{key!r} is transformers' own activation ({_entry_class(current).__name__}); "
            f"config.hidden_act={key!r} keeps building it. Use {PREFIX + key!r} for actlab's.",
            UserWarning,
            stacklevel=3,
        )


def hidden_act_kind(value: str) -> str | None:
    """The activation kind that ``config.hidden_act = value`` builds, or None if unknown."""
    try:
        acts = _activations()
        if value in acts.ACT2FN:
            return identify_activation(acts.ACT2FN[value])
    except ImportError:
        pass
    spec = value[len(PREFIX) :] if value.startswith(PREFIX) else value
    try:
        return get_activation_info(parse_spec(spec)[0]).name
    except ActivationSpecError:
        return None


def hidden_act_for(module: nn.Module) -> str | None:
    """A ``config.hidden_act`` string that rebuilds ``module``'s function, or None.

    actlab modules give their call string (``module.spec()``), prefixed with ``"actlab:"``
    when transformers owns that key for a different module. Other modules are accepted only
    when transformers has a key that builds the same class with default settings.
    """
    acts = _activations()
    if canonical_name(module) and callable(getattr(module, "spec", None)):
        key = str(module.spec())  # type: ignore[operator]
        hf = acts.ACT2CLS.get(key)
        if hf is None or _is_ours(hf) or _equivalent(hf, module):
            return key
        return PREFIX + key
    candidates = []
    for key, value in acts.ACT2CLS.items():
        if not isinstance(value, tuple) and value is type(module) and not _is_ours(value):
            try:
                same = repr(value()) == repr(module) and len(module.state_dict()) == 0
            except Exception:
                same = False
            if same:
                candidates.append(key)
    if not candidates:
        return None
    kind = identify_activation(module)
    return kind if kind in candidates else candidates[0]


def _configs(config: Any) -> Iterable[Any]:
    yield config
    for value in vars(config).values():
        if hasattr(value, "to_dict") and any(hasattr(value, a) for a in _CONFIG_ATTRS):
            yield value


def register_config(config: Any) -> list[str]:
    """Register the actlab activations that ``config`` (and its sub-configs) name."""
    acts = _activations()
    added: list[str] = []
    for cfg in _configs(config):
        for attr in _CONFIG_ATTRS:
            value = getattr(cfg, attr, None)
            if not isinstance(value, str) or value in acts.ACT2FN:
                continue
            try:
                added += register(value)
            except ActivationSpecError:
                pass  # not an actlab spec either: transformers will report it
    return added


# Auto class for an architecture name transformers does not define (remote code, renamed
# classes), by the head its name announces.
_HEADS = (
    ("ForCausalLM", "AutoModelForCausalLM"),
    ("LMHeadModel", "AutoModelForCausalLM"),
    ("ForMaskedLM", "AutoModelForMaskedLM"),
    ("ForSequenceClassification", "AutoModelForSequenceClassification"),
    ("ForTokenClassification", "AutoModelForTokenClassification"),
    ("ForQuestionAnswering", "AutoModelForQuestionAnswering"),
    ("ForImageClassification", "AutoModelForImageClassification"),
)


def model_class(config: Any, auto_class: str | type | None = None) -> Any:
    """The transformers class that :func:`from_pretrained` loads ``config`` with.

    ``auto_class`` (a class, or the name of one in ``transformers``) wins when given. Else the
    first entry of ``config.architectures``: the transformers class of that name when it
    exists, is a ``PreTrainedModel`` and takes this config (``LlamaForCausalLM``, keeping the
    LM head); otherwise the Auto class its suffix names (``...ForCausalLM`` ->
    ``AutoModelForCausalLM``); ``AutoModel`` when the config names no architecture.
    """
    import transformers

    if auto_class is not None:
        cls: Any = auto_class
        if isinstance(auto_class, str):
            ok_name = auto_class.isidentifier() and not auto_class.startswith("_")
            cls = getattr(transformers, auto_class, None) if ok_name else None
        if not isinstance(cls, type) or not callable(getattr(cls, "from_pretrained", None)):
            raise ValueError(
                f"auto_class={auto_class!r} is not a transformers model class; give one such as "
                "'AutoModelForCausalLM' or 'AutoModel' (or leave it out to follow the config)"
            )
        return cls
    archs = getattr(config, "architectures", None)
    name = archs[0] if isinstance(archs, (list, tuple)) and archs else None
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        return transformers.AutoModel
    try:
        named = getattr(transformers, name, None)
    except Exception:  # a lazy import of an optional backend failed
        named = None
    if isinstance(named, type) and issubclass(named, transformers.PreTrainedModel):
        config_class = getattr(named, "config_class", None)
        if not isinstance(config_class, type) or isinstance(config, config_class):
            return named
    for suffix, auto in _HEADS:
        if name.endswith(suffix):
            return getattr(transformers, auto)
    return transformers.AutoModel


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _local_folder(path: str) -> bool:
    """Whether ``path`` can only mean a local folder (not a hub id like ``org/name``)."""
    p = Path(path).expanduser()
    return p.is_absolute() or path.startswith((".", "~")) or p.exists()


def _check_activations(where: str, config: Any) -> None:
    """Every activation the config names must be transformers' or a valid actlab spec."""
    acts = _activations()
    for cfg in _configs(config):
        for attr in _CONFIG_ATTRS:
            value = getattr(cfg, attr, None)
            if not isinstance(value, str) or value in acts.ACT2FN:
                continue
            spec = value[len(PREFIX) :] if value.startswith(PREFIX) else value
            try:
                create_activation(spec)
                reason = "it could not be registered"
            except ActivationSpecError as e:
                reason = _one_line(e)
            except Exception as e:  # noqa: BLE001 - any failure to build it is the reason
                reason = f"{type(e).__name__}: {_one_line(e)}"
            raise ValueError(
                f"{where}: config.{attr}={value!r} is neither a transformers activation nor an "
                f"actlab one ({reason})"
            )


def from_pretrained(
    path: str | Path, *args: Any, auto_class: str | type | None = None, **kwargs: Any
) -> Any:
    """Load a saved model after registering the actlab activations its config names.

    The class comes from the config (:func:`model_class`: ``LlamaForCausalLM`` for a saved
    causal LM, so its ``lm_head`` is kept), unless ``auto_class`` (a transformers class or
    its name, e.g. ``"AutoModel"``) says otherwise. All other arguments go to
    ``from_pretrained``. A missing folder, an unreadable config or weights file, or an
    activation that neither transformers nor actlab knows raises ValueError or OSError with
    one line naming the folder; nothing in the folder is executed (``trust_remote_code``
    stays off unless passed).
    """
    import transformers

    where = str(path)
    if _local_folder(where):
        folder = Path(where).expanduser()
        if not folder.exists():
            raise FileNotFoundError(f"{where}: no such model folder (save_pretrained writes one)")
        if not folder.is_dir():
            raise ValueError(
                f"{where}: is a file; pass the folder that holds config.json and the weights"
            )
        path = str(folder)
    config = kwargs.pop("config", None)
    if config is None:
        hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        try:
            config = transformers.AutoConfig.from_pretrained(path, **hub)
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{where}: cannot read the model config: {_one_line(e)}") from e
    cls = model_class(config, auto_class)
    register_config(config)
    _check_activations(where, config)
    try:
        return cls.from_pretrained(path, *args, config=config, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as e:
        raise ValueError(f"{where}: cannot load the model: {_one_line(e)}") from e
    except Exception as e:
        if type(e).__name__ != "SafetensorError":
            raise
        raise ValueError(f"{where}: the weights file is corrupt: {_one_line(e)}") from e


def _is_transformers_config(config: object) -> bool:
    return any(c.__module__.startswith("transformers") for c in type(config).__mro__)


@on_replaced("transformers-config")
def sync_hidden_act(model: nn.Module, report: ReplacementReport) -> None:
    """Point ``config.hidden_act`` at the new activation when every site of its kind moved.

    Registered as the ``"transformers-config"`` hook of :func:`actlab.surgery.on_replaced`,
    so it runs after every successful replacement on a model with a transformers ``config``.
    When ``config.hidden_act`` (``hidden_activation`` for Gemma) names a kind whose every
    site was replaced by modules with one config string, the attribute is set to that string
    (through ``report.setattr``, so a rollback restores it) and the string is registered
    here. Otherwise the config is left alone and ``report.notes`` says why. Nested configs
    (``config.text_config``) are never changed.
    """
    config = getattr(model, "config", None)
    if config is None or not _is_transformers_config(config) or not report.sites:
        return
    swapped = {k for r in report.sites if (k := identify_activation(r.old)) is not None}
    if not swapped:
        return
    attrs = [a for a in _CONFIG_ATTRS if isinstance(getattr(config, a, None), str)]
    if not attrs:
        nested = [
            f"config.{name}.{a}"
            for name, sub in vars(config).items()
            for a in _CONFIG_ATTRS
            if hasattr(sub, "to_dict") and isinstance(getattr(sub, a, None), str)
        ]
        if nested:
            report.notes.append(
                f"{', '.join(nested)} not updated (nested configs are left alone); set them "
                "by hand before save_pretrained if the swap should survive a reload"
            )
        return
    inserted = {id(r.new) for r in report.sites}
    try:
        for attr in attrs:
            old = getattr(config, attr)
            kind = hidden_act_kind(old)
            if kind is None or kind not in swapped:
                continue
            sites = find_modules(model, lambda path, m: identify_activation(m) is not None)
            left = [p for p, m in sites if identify_activation(m) == kind and id(m) not in inserted]
            keys = {
                hidden_act_for(r.new) for r in report.sites if identify_activation(r.old) == kind
            }
            if left or len(keys) != 1 or None in keys:
                why = (
                    f"{len(left)} {kind} site(s) were not swapped"
                    if left
                    else "the new activations have no single config string"
                )
                report.notes.append(
                    f"config.{attr} left as {old!r}: {why}, so a model rebuilt from this config "
                    "(from_pretrained) would not match; save the state dict instead"
                )
                continue
            key = keys.pop()
            assert key is not None
            if key != old:
                register(key)
                report.setattr(config, attr, key)
                report.config[attr] = [old, key]
    except ImportError as e:
        report.notes.append(f"config left unchanged: {e}")
