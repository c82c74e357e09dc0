"""Classic activations: thin, registered wrappers over PyTorch's native kernels.

Each wrapper takes keyword-only parameters and ``inplace=`` and calls the native op (one
fused pass, input- or output-only saved for backward). Each registration carries an
independent float64 closed form used as the test oracle. Formulas and papers:

    relu        max(0, x)                                   Nair & Hinton 2010
    leaky_relu  x if x >= 0 else a*x   (a = 0.01)           Maas et al. 2013
    prelu       x if x >= 0 else w*x   (w learnable, 0.25)  He et al. 2015
    elu         x if x > 0 else α(eˣ-1)                      Clevert et al. 2016
    celu        x if x > 0 else α(e^(x/α)-1)                 Barron 2017
    selu        λ(x if x > 0 else α(eˣ-1))                   Klambauer et al. 2017
    gelu        x Φ(x)                                      Hendrycks & Gimpel 2016
    gelu_tanh   ½x(1+tanh(√(2/π)(x+0.044715x³)))             Hendrycks & Gimpel 2016
    silu        x σ(x)                                      Elfwing et al. 2018
    mish        x tanh(softplus(x))                          Misra 2019
    softplus    (1/β) log(1+e^(βx)), linear above threshold Dugas et al. 2001
    hardswish   x relu6(x+3)/6                               Howard et al. 2019
    sigmoid     1/(1+e^(-x));  tanh
    fatrelu     x if x > t else 0      (t = 0.01)           ProSparse, Song et al. 2024
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from actlab.activations._base import Activation, scalar
from actlab.registry import ParamRule, register_activation

INF = math.inf
NAN = math.nan
_SELU_L = 1.0507009873554804934193349852946
_SELU_A = 1.6732632423543772848170429916717


def _phi_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.special.erf(x / math.sqrt(2.0)))


def _sigmoid64(x: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-x))


def _nonzero(value: float) -> float:
    if value == 0:
        raise ValueError("celu: alpha must be non-zero (it divides x)")
    return value


@register_activation(
    "relu",
    formula="max(0, x)",
    paper="Nair & Hinton 2010, Rectified Linear Units Improve Restricted Boltzmann Machines",
    reference=lambda x, m: torch.where(x > 0, x, torch.zeros_like(x)),
    limits=(0.0, INF),
    smooth=False,
)
class ReLU(Activation):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x, inplace=self.inplace)


@register_activation(
    "leaky_relu",
    formula="x if x >= 0 else negative_slope*x",
    paper="Maas et al. 2013, Rectifier Nonlinearities Improve Neural Network Acoustic Models",
    reference=lambda x, m: torch.where(x >= 0, x, m.negative_slope * x),
    limits=(-INF, INF),
    smooth=False,
)
class LeakyReLU(Activation):
    def __init__(self, *, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__(inplace=inplace)
        self.negative_slope = float(negative_slope)
        self._set_hparams(negative_slope=self.negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope, inplace=self.inplace)


@register_activation(
    "prelu",
    formula="x if x >= 0 else w*x   (one learnable scalar w)",
    paper="He et al. 2015, Delving Deep into Rectifiers",
    reference=lambda x, m: torch.where(x >= 0, x, float(m.weight.detach()) * x),
    limits=(-INF, INF),
    smooth=False,
)
class PReLU(Activation):
    weight: Tensor

    def __init__(
        self, *, init: float = 0.25, weight_decay: bool = False, inplace: bool = False
    ) -> None:
        super().__init__(inplace=inplace)
        scalar(self, "weight", init, learnable=True)
        self.weight_decay = bool(weight_decay)
        self._set_hparams(init=float(init), weight_decay=self.weight_decay)

    def forward(self, x: Tensor) -> Tensor:
        # F.prelu needs a 1-D weight of x's dtype; a 0-dim view of one element broadcasts.
        return F.prelu(x, self.weight.to(x.dtype).reshape(1))


@register_activation(
    "elu",
    formula="x if x > 0 else alpha*(exp(x)-1)",
    paper="Clevert et al. 2016, Fast and Accurate Deep Network Learning by ELUs",
    reference=lambda x, m: torch.where(x > 0, x, m.alpha * torch.expm1(x)),
    limits=(-1.0, INF),
)
class ELU(Activation):
    def __init__(self, *, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__(inplace=inplace)
        self.alpha = float(alpha)
        self._set_hparams(alpha=self.alpha)

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha, inplace=self.inplace)


@register_activation(
    "celu",
    formula="x if x > 0 else alpha*(exp(x/alpha)-1)",
    paper="Barron 2017, Continuously Differentiable Exponential Linear Units",
    reference=lambda x, m: torch.where(x > 0, x, m.alpha * torch.expm1(x / m.alpha)),
    limits=(-1.0, INF),
    rules={"alpha": ParamRule("float", check=_nonzero)},
)
class CELU(Activation):
    def __init__(self, *, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__(inplace=inplace)
        self.alpha = float(alpha)
        self._set_hparams(alpha=self.alpha)

    def forward(self, x: Tensor) -> Tensor:
        return F.celu(x, self.alpha, inplace=self.inplace)


@register_activation(
    "selu",
    formula="lambda*(x if x > 0 else alpha*(exp(x)-1)), lambda=1.0507, alpha=1.6733",
    paper="Klambauer et al. 2017, Self-Normalizing Neural Networks",
    reference=lambda x, m: _SELU_L * torch.where(x > 0, x, _SELU_A * torch.expm1(x)),
    limits=(-_SELU_L * _SELU_A, INF),
)
class SELU(Activation):
    def forward(self, x: Tensor) -> Tensor:
        return F.selu(x, inplace=self.inplace)


@register_activation(
    "gelu",
    formula="x * Phi(x)   (Phi: standard normal CDF, exact erf form)",
    paper="Hendrycks & Gimpel 2016, Gaussian Error Linear Units (GELUs)",
    reference=lambda x, m: x * _phi_cdf(x),
    limits=(NAN, INF),
    limits_vary=((), (NAN,)),
    aliases=("gelu_erf",),
    notes="f(+inf) is platform-dependent: inf or nan (PyTorch's own kernel differs by CPU "
    "and dtype); f(-inf) is nan. Not guarded, to keep the baseline at PyTorch's speed.",
)
class GELU(Activation):
    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x)


@register_activation(
    "gelu_tanh",
    formula="0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x^3)))",
    paper="Hendrycks & Gimpel 2016, Gaussian Error Linear Units (GELUs)",
    reference=lambda x, m: (
        0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    ),
    limits=(NAN, INF),
    aliases=("gelu_new", "gelu_pytorch_tanh"),
)
class GELUTanh(Activation):
    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate="tanh")


@register_activation(
    "silu",
    formula="x * sigmoid(x)",
    paper="Elfwing et al. 2018, Sigmoid-Weighted Linear Units; Hendrycks & Gimpel 2016",
    reference=lambda x, m: x * _sigmoid64(x),
    limits=(NAN, INF),
)
class SiLU(Activation):
    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x, inplace=self.inplace)


@register_activation(
    "mish",
    formula="x * tanh(softplus(x))",
    paper="Misra 2019, Mish: A Self Regularized Non-Monotonic Activation Function",
    reference=lambda x, m: x * torch.tanh(torch.log1p(torch.exp(x))),
    limits=(NAN, INF),
)
class Mish(Activation):
    def forward(self, x: Tensor) -> Tensor:
        return F.mish(x, inplace=self.inplace)


@register_activation(
    "softplus",
    formula="(1/beta)*log(1 + exp(beta*x)); x where beta*x > threshold",
    paper="Dugas et al. 2001, Incorporating Second-Order Functional Knowledge",
    reference=lambda x, m: torch.where(
        m.beta * x > m.threshold, x, torch.log1p(torch.exp(m.beta * x)) / m.beta
    ),
    limits=(0.0, INF),
    rules={"beta": ParamRule("float", gt=0)},
)
class Softplus(Activation):
    def __init__(
        self, *, beta: float = 1.0, threshold: float = 20.0, inplace: bool = False
    ) -> None:
        super().__init__(inplace=inplace)
        self.beta, self.threshold = float(beta), float(threshold)
        self._set_hparams(beta=self.beta, threshold=self.threshold)

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x, self.beta, self.threshold)


@register_activation(
    "hardswish",
    formula="x * min(max(x + 3, 0), 6) / 6",
    paper="Howard et al. 2019, Searching for MobileNetV3",
    reference=lambda x, m: x * torch.clamp(x + 3, 0, 6) / 6,
    limits=(NAN, INF),
    smooth=False,
)
class Hardswish(Activation):
    def forward(self, x: Tensor) -> Tensor:
        return F.hardswish(x, inplace=self.inplace)


@register_activation(
    "sigmoid",
    formula="1 / (1 + exp(-x))",
    paper="classic logistic function (e.g. Rumelhart et al. 1986)",
    reference=lambda x, m: _sigmoid64(x),
    limits=(0.0, 1.0),
)
class Sigmoid(Activation):
    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)


@register_activation(
    "tanh",
    formula="(exp(x) - exp(-x)) / (exp(x) + exp(-x))",
    paper="classic hyperbolic tangent (LeCun et al. 1998, Efficient BackProp)",
    reference=lambda x, m: torch.where(
        x >= 0, 1 - 2 / (torch.exp(2 * x) + 1), 2 / (torch.exp(-2 * x) + 1) - 1
    ),
    limits=(-1.0, 1.0),
)
class Tanh(Activation):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)


@register_activation(
    "fatrelu",
    formula="x if x > threshold else 0   (threshold = 0.01)",
    paper="Song et al. 2024, ProSparse: Introducing and Enhancing Intrinsic Activation Sparsity",
    reference=lambda x, m: torch.where(x > m.threshold, x, torch.zeros_like(x)),
    limits=(0.0, INF),
    smooth=False,
    family="sparse",
)
class FATReLU(Activation):
    def __init__(self, *, threshold: float = 0.01, inplace: bool = False) -> None:
        super().__init__(inplace=inplace)
        self.threshold = float(threshold)
        self._set_hparams(threshold=self.threshold)

    def forward(self, x: Tensor) -> Tensor:
        return F.threshold(x, self.threshold, 0.0, inplace=self.inplace)
