"""Parameter validation, canonical specs and hostile input for the zoo (API and CLI).

Every registered activation's parameters are checked by one set of rules
(:func:`actlab.registry.validate_params`), whether it is built from a call string, with keyword
overrides, or by calling its class directly. Bad input gets one line naming the problem
(``ActivationSpecError`` from the API, exit 2 from the CLI), never a traceback, never a silent
accept, and nothing is written.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import actlab
from actlab.activations import EAFO, CRReLU, PolyReLU, PReLU, ReLU, Swish
from actlab.cli import main
from actlab.registry import ActivationSpecError, canonical_spec, parse_spec

# (spec, words the one-line error must contain)
HOSTILE_SPECS = [
    ("crrelu(eps=1e999)", "eps must be finite"),
    ("crrelu(eps=-1e999)", "eps must be finite"),
    ("crrelu(eps='nan')", "eps must be a number"),
    ("crrelu(eps=float('nan'))", "must be a Python literal"),
    ("crrelu(eps=True)", "eps must be a number"),
    ("crrelu(eps=1j)", "eps must be a number"),
    ("crrelu(eps=[1])", "eps must be a number"),
    ("swish(beta=1e999)", "beta must be finite"),
    ("prelu(init='nan')", "init must be a number"),
    ("eafo(tau=1e999)", "tau must be finite"),
    ("eafo(tau=-1.0)", "tau must be > 0"),
    ("eafo(tau=0)", "tau must be > 0"),
    ("eafo(base='nonsense')", "unsupported value 'nonsense'"),
    ("eafo(base='elu')", "'elu' is refused"),
    ("eafo(base=3)", "base must be a string"),
    ("relu(inplace='False')", "inplace must be True or False"),
    ("relu(inplace=0)", "inplace must be True or False"),
    ("crrelu(learnable='yes')", "learnable must be True or False"),
    ("crrelu(weight_decay=None)", "weight_decay must be True or False"),
    ("crrelu(eps=1, eps=2)", "'eps' is given twice"),
    ("polyrelu(order=1e300)", "order must be <= 32"),
    ("polyrelu(order=1000000000)", "order must be <= 32"),
    ("polyrelu(order=10**9)", "must be a Python literal"),
    ("polyrelu(order=-3)", "order must be >= 1"),
    ("polyrelu(order=2.5)", "order must be a whole number"),
    ("polyrelu(init=(1, 2))", "init needs order+1 = 4"),
    ("polyrelu(init=(0, 1e999, 0, 0))", "init[1] must be finite"),
    ("polyrelu(init='abc')", "init must be a tuple"),
    ("polyrelu(order=40, init=tuple(range(41)))", "must be a Python literal"),
    ("leaky_relu(negative_slope=[1, 2])", "negative_slope must be a number"),
    ("softplus(beta=0)", "beta must be > 0"),
    ("softplus(threshold=1e999)", "threshold must be finite"),
    ("celu(alpha=0)", "alpha must be non-zero"),
    ("elu(alpha=nan)", "must be a Python literal"),
    ("fatrelu(threshold=-1e999)", "threshold must be finite"),
    ("wafbc(width=0)", "width must be > 0"),
    ("wafbc(loc=1e999)", "loc must be finite"),
    ("expr(formula='x*')", "formula"),
    ("expr(formula=3)", "formula must be a string"),
    ("expr(params={'beta': 1e999})", "must be finite"),
    ("expr(params=[1])", "params must be a dict"),
    ("expr(params={'nope': 1.0})", "no learnable scalar 'nope'"),
    ("crrelu(bogus=1)", "no parameter 'bogus'"),
    ("crrelu(0.5)", "by keyword"),
    ("crrelu(**{'eps': 1})", "'**' is not allowed"),
    ("crrelu\x00", "cannot parse"),
    ("(" * 300 + "relu" + ")" * 300, "cannot parse"),
    ("x" * 5000, "longer than"),
    ("", "empty"),
    ("__import__('os').system('touch PWNED')", "must be a name or a call"),
    ("gleu", "unknown activation 'gleu'"),
]


@pytest.mark.parametrize("spec, words", HOSTILE_SPECS, ids=[s[:40] for s, _ in HOSTILE_SPECS])
def test_hostile_specs_get_one_line_errors(
    spec: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ActivationSpecError) as err:
        actlab.create_activation(spec)
    msg = str(err.value)
    assert "\n" not in msg and words in msg, msg
    assert not list(tmp_path.iterdir())  # nothing written (and nothing executed)


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: CRReLU(eps=float("inf")), "eps must be finite"),
        (lambda: CRReLU(eps=float("nan")), "eps must be finite"),
        (lambda: Swish(beta=math.inf), "beta must be finite"),
        (lambda: PReLU(init=math.nan), "init must be finite"),
        (lambda: EAFO(tau=1e999), "tau must be finite"),
        (lambda: EAFO(base="elu"), "'elu' is refused"),
        (lambda: ReLU(inplace="False"), "inplace must be True or False"),  # type: ignore[arg-type]
        (lambda: PolyReLU(order=10**9), "order must be <= 32"),
        (lambda: CRReLU(0.5), "pass parameters by keyword"),  # type: ignore[misc]
    ],
)
def test_constructors_validate_too(build: object, words: str) -> None:
    with pytest.raises((ValueError, TypeError), match=words):
        build()  # type: ignore[operator]


def test_overrides_and_classes_are_validated_and_wrapped() -> None:
    with pytest.raises(ActivationSpecError, match="eps must be finite"):
        actlab.create_activation("crrelu", eps=math.inf)
    with pytest.raises(
        ActivationSpecError, match="cannot build CRReLU: crrelu: eps must be finite"
    ):
        actlab.create_activation(CRReLU, eps=math.nan)
    assert CRReLU(eps=1).eps.item() == 1.0  # ints are numbers: normalised to float
    assert CRReLU(eps=1)._hparams["eps"] == 1.0 and isinstance(CRReLU(eps=1)._hparams["eps"], float)
    import inspect

    assert "eps" in inspect.signature(CRReLU.__init__).parameters  # wraps keeps the signature


def test_every_registered_activation_has_rules_for_every_parameter() -> None:
    for name in actlab.list_activations():
        info = actlab.get_activation_info(name)
        assert set(info.rules) == set(info.params) | {"inplace"}, name
        assert info.rules["inplace"].kind == "bool"
        for pname, default in info.params.items():  # every default passes its own rule
            info.rules[pname].apply(name, pname, default)


# ---------------------------------------------------------------- canonical specs
@pytest.mark.parametrize(
    "specs, canonical",
    [
        (["crrelu", "crrelu(eps=0.01)", "CRReLU(eps=1e-2)", "crrelu( inplace=True )"], "crrelu"),
        (["crrelu(eps=1)", "crrelu(eps=1.0)", "crrelu(eps=1.00)"], "crrelu(eps=1.0)"),
        (
            ["crrelu(learnable=False, eps=0.5)", "crrelu(eps=0.5, learnable=False)"],
            "crrelu(eps=0.5, learnable=False)",
        ),
        (["eafo(base='GELU')", "eafo(tau=0.1)", "eafo"], "eafo"),
        (["eafo(base='tanh', eps=2)", "eafo(eps=2.0, base='TANH ')"], "eafo(base='tanh', eps=2.0)"),
        (["polyrelu(order=3.0)", "polyrelu(init=None)"], "polyrelu"),
        (
            ["polyrelu(init=[0, 1, 2, 3])", "polyrelu(init=(0.0, 1, 2.0, 3))"],
            "polyrelu(init=(0.0, 1.0, 2.0, 3.0))",
        ),
        (["gelu_new", "gelu_tanh", "GELU_PYTORCH_TANH"], "gelu_tanh"),
        (["expr", "expr(params={})", "expr(formula='x * sigmoid(beta * x)')"], "expr"),
        (["expr(params={'beta': 1})", "expr(params={'beta': 1.0})"], "expr(params={'beta': 1.0})"),
    ],
)
def test_equivalent_specs_have_one_canonical_text(specs: list[str], canonical: str) -> None:
    for spec in specs:
        assert canonical_spec(spec) == canonical, spec
    assert canonical_spec(canonical) == canonical
    built = actlab.create_activation(canonical)
    assert built.spec() == actlab.create_activation(specs[0]).spec()


def test_canonical_activation_of_the_bench_plan_uses_it() -> None:
    from actlab.bench.plan import canonical_activation

    assert canonical_activation("crrelu(eps=0.01)") == canonical_activation("crrelu") == "crrelu"
    assert canonical_activation("crrelu(eps=1)") == canonical_activation("crrelu(eps=1.0)")
    with pytest.raises(ValueError, match="finite"):
        canonical_activation("crrelu(eps=1e999)")


_NAMES = st.sampled_from(sorted(actlab.list_activations()) + ["gleu", "x", "CRReLU", "os"])
_KEYS = st.sampled_from(
    [
        "eps",
        "beta",
        "order",
        "init",
        "base",
        "tau",
        "inplace",
        "alpha",
        "threshold",
        "width",
        "formula",
        "params",
        "learnable",
        "zz",
    ]
)
_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(repr),
    st.booleans().map(repr),
    st.sampled_from(
        [
            "'gelu'",
            "'elu'",
            "'nan'",
            "None",
            "(1, 2)",
            "[0, 1, 2, 3]",
            "{'beta': 2}",
            "'x*sigmoid(beta*x)'",
            "'x*'",
            "1e999",
            "-1e999",
            "1e300",
            "0",
            "-0.0",
            "(0.0, 1e999, 0, 0)",
            "x",
            "f()",
            "1+1",
        ]
    ),
)


@st.composite
def _calls(draw: st.DrawFn) -> str:
    name = draw(_NAMES)
    args = draw(st.lists(st.tuples(_KEYS, _VALUES), max_size=4))
    return f"{name}({', '.join(f'{k}={v}' for k, v in args)})"


def _only_spec_errors(spec: str) -> None:
    try:
        m = actlab.create_activation(spec)
    except ActivationSpecError as e:
        assert "\n" not in str(e)
        return
    canonical = canonical_spec(spec)  # succeeds whenever create_activation does
    assert "inf" not in canonical.replace("info", "") and "nan" not in canonical.replace(
        "'nan'", ""
    )
    assert canonical_spec(canonical) == canonical
    assert type(actlab.create_activation(canonical)) is type(m)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(_calls())
def test_fuzz_call_strings(spec: str) -> None:
    _only_spec_errors(spec)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_random_text(text: str) -> None:
    try:
        parse_spec(text)
    except ActivationSpecError as e:
        assert "\n" not in str(e)
    _only_spec_errors(text)


# ---------------------------------------------------------------- CLI: ls, show, plot
def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "spec",
    [
        "relu(inplace=True)",
        "silu(inplace=True)",
        "elu(inplace=True)",
        "fatrelu(inplace=True)",
        "gelu",
        "crrelu(eps=0.2)",
    ],
)
def test_show_accepts_inplace_specs(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "show", spec)
    assert code == 0 and "Traceback" not in out + err and "f'(x)" in out


def test_show_says_what_is_platform_dependent(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "show", "gelu")
    assert code == 0 and "inf or nan (platform-dependent)" in out


CLI_HOSTILE = [
    (["show", "crrelu(eps=1e999)"], "eps must be finite"),
    (["show", "crrelu(eps=float('nan'))"], "must be a Python literal"),
    (["show", "relu(inplace='False')"], "inplace must be True or False"),
    (["show", "gleu"], "unknown activation 'gleu'"),
    (["show", "eafo(base='elu')"], "'elu' is refused"),
    (["show", "polyrelu(order=1000000000)"], "order must be <= 32"),
    (["show", "crrelu(eps=1, eps=2)"], "given twice"),
    (["show", ""], "empty"),
    (["ls", "nothing*"], "no activation matches"),
    (["ls", "--family", "nope"], "no activation matches"),
    (["plot", "gelu", "-o", "missing/dir/x.png"], "does not exist"),
    (["plot", "gelu", "-o", "x.txt"], "must end in .png"),
    (["plot", "crrelu(eps=1e999)", "-o", "x.png"], "eps must be finite"),
    (["plot", "gleu", "-o", "x.png"], "unknown activation"),
    (["plot", "gelu", "-o", "x.png", "--points", "1000000000"], "--points must be between"),
    (["plot", "gelu", "-o", "x.png", "--points", "1"], "--points must be between"),
    (["plot", "gelu", "-o", "x.png", "--xmin", "nan"], "must be finite"),
    (["plot", "gelu", "-o", "x.png", "--xmax", "inf"], "must be finite"),
    (["plot", "gelu", "-o", "x.png", "--xmin", "3", "--xmax", "-3"], "must be below --xmax"),
]


@pytest.mark.parametrize("argv, words", CLI_HOSTILE, ids=[" ".join(a)[:40] for a, _ in CLI_HOSTILE])
def test_cli_hostile_input_exit_2_one_line(
    argv: list[str],
    words: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, *argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err, err
    assert not list(tmp_path.iterdir())  # nothing written
