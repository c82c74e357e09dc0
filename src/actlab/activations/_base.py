"""Shared constructor shape of every actlab activation.

Every activation is an ``nn.Module`` whose ``__init__`` takes keyword-only parameters (all
with defaults) and ``inplace=``. ``inplace`` is honoured where PyTorch's own op supports it
(relu, leaky_relu, elu, celu, selu, silu, mish, hardswish, fatrelu) and accepted but ignored
elsewhere, so that model surgery never trips on constructor shapes.

Learnable scalars (CRReLU's ε, Swish's β, ...) are 0-dim parameters. Whether they take
weight decay is the module attribute ``weight_decay`` (constructor keyword of the same name),
honoured by :func:`actlab.param_groups`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Activation", "scalar"]


def scalar(module: nn.Module, name: str, value: float, learnable: bool) -> None:
    """Register a 0-dim float32 ``name`` on ``module``: a Parameter if learnable, else a buffer."""
    t = torch.tensor(float(value), dtype=torch.float32)
    if learnable:
        module.register_parameter(name, nn.Parameter(t))
    else:
        module.register_buffer(name, t)


class Activation(nn.Module):
    """Base class: stores ``inplace`` and the hyper-parameters for ``repr`` and ``actlab show``."""

    activation_name: str = ""
    weight_decay: bool = True

    def __init__(self, *, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)
        self._hparams: dict[str, Any] = {}

    def _set_hparams(self, **kw: Any) -> None:
        self._hparams.update(kw)

    def extra_repr(self) -> str:
        learned = dict(self.named_parameters(recurse=False))
        parts = [f"{k}={v!r}" for k, v in self._hparams.items() if k not in learned]
        for n, p in learned.items():  # the current (learned) value, not the init
            parts.append(f"{n}={p.detach().float().tolist()}")
        if self.inplace:
            parts.append("inplace=True")
        return ", ".join(parts)

    def spec(self) -> str:
        """A call string that rebuilds this module's hyper-parameters (not learned values).

        Only hyper-parameters that differ from the constructor defaults are written, so a
        default CRReLU gives ``"crrelu"`` and ``CRReLU(eps=0.02)`` gives ``"crrelu(eps=0.02)"``.
        """
        import inspect

        sig = inspect.signature(type(self).__init__)
        args = ", ".join(
            f"{k}={v!r}"
            for k, v in self._hparams.items()
            if k not in sig.parameters or sig.parameters[k].default != v
        )
        return f"{self.activation_name}({args})" if args else self.activation_name
