"""Model surgery: replace modules of any ``nn.Module``, all or nothing, with a report.

Two entry points:

- :func:`replace_modules` (the primitive): ``match`` selects modules (a callable
  ``(path, module) -> bool``, an ``nn.Module`` class or tuple of classes, or an activation
  kind such as ``"gelu"``), ``build(path, old)`` makes a fresh module per site, ``where=``
  globs restrict the paths. Returns a :class:`ReplacementReport` (``report.table()``).
- :func:`swap_activations` (a client of it): ``{"gelu": "crrelu"}`` style mappings from
  activation kinds to actlab specs, with checks for functional calls surgery cannot reach,
  and ``config.hidden_act`` kept in step for Hugging Face models.

::

    from torch import nn
    from actlab import create_activation
    from actlab.surgery import replace_modules, swap_activations

    report = swap_activations(model, {"gelu": "crrelu"})        # every GELU site
    report = replace_modules(model, nn.GELU, lambda path, old: create_activation("crrelu"))
    report = replace_modules(                                   # wrap: old weights kept
        model, lambda path, m: isinstance(m, nn.Linear) and ".mlp." in path,
        lambda path, old: MyLinear(old), where="model.layers.*")
    print(report.table())                                       # path | old | new

Guarantees: if any build, check or hook fails the model is exactly as before (same module
objects, same parameters); untouched modules keep their parameters and hooks; weight tying
(``lm_head.weight is embed_tokens.weight``) is kept or the call fails; the model itself (the
root) is never replaced. Global :func:`on_replaced` hooks let integrations follow a
replacement (the transformers one updates ``config.hidden_act``). :func:`find_modules` is a
dry run. Activation kinds come from :func:`identify_activation`.

:func:`replace_bn_act` (another client) turns each BatchNorm2d -> ReLU pair of a conv net,
found by data flow, into one EvoNorm layer (``evonorm_b0``/``evonorm_s0``; the ReLU becomes
``nn.Identity``), all or nothing, with a report.
"""

from __future__ import annotations

from actlab.surgery._evonorm import find_bn_act_pairs, replace_bn_act
from actlab.surgery._kinds import identify_activation, known_kinds
from actlab.surgery._replace import (
    Builder,
    Hook,
    Matcher,
    find_modules,
    on_replaced,
    replace_modules,
    replacement_hooks,
)
from actlab.surgery._report import (
    Replacement,
    ReplacementReport,
    SurgeryError,
    SurgeryInputError,
    SurgeryWarning,
    SwapReport,
    SwapSite,
)
from actlab.surgery._swap import spec_string as spec_string  # public before; not in __all__
from actlab.surgery._swap import swap_activations

__all__ = [
    "Builder",
    "Hook",
    "Matcher",
    "Replacement",
    "ReplacementReport",
    "SurgeryError",
    "SurgeryInputError",
    "SurgeryWarning",
    "SwapReport",
    "SwapSite",
    "find_bn_act_pairs",
    "find_modules",
    "identify_activation",
    "known_kinds",
    "on_replaced",
    "replace_bn_act",
    "replace_modules",
    "replacement_hooks",
    "swap_activations",
]
