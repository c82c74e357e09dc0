"""Hostile inputs to ``actlab.integrations.transformers.from_pretrained``.

A tiny Llama causal LM is saved once; each case copies it and breaks one thing (config,
weights, path, arguments). The answer must be a ValueError/OSError with a one-line message
naming the folder, nothing may be written into it and nothing in it executed. Classified as
in ``tests/data/test_hostile_data.py`` (clear / unclear / traceback / silent / wrote);
``python tests/integrations/test_hostile_hf.py`` prints the table.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("transformers")

import actlab.integrations.transformers as hf  # noqa: E402

MARKER = "PWNED_BY_CONFIG"


def save_tiny_llama(path: Path) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(path)


def _edit_config(**changes: object) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(changes)
        (d / "config.json").write_text(json.dumps(cfg))

    return edit


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda d: (d / name).write_bytes(data)


def _truncate_weights(d: Path) -> None:
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[:500])


# case id -> (edit of the saved folder, path to pass (relative to the folder), kwargs)
CASES: dict[str, tuple[Callable[[Path], None] | None, str, dict]] = {
    "missing-folder": (None, "does-not-exist", {}),
    "path-is-a-file": (None, "config.json", {}),
    "config-not-json": (_write("config.json", b"{not json"), ".", {}),
    "config-missing": (lambda d: (d / "config.json").unlink(), ".", {}),
    "config-unknown-model-type": (_edit_config(model_type="nonexistent_xyz"), ".", {}),
    "hidden-act-python-code": (
        _edit_config(hidden_act=f"__import__('os').system('touch {MARKER}')"),
        ".",
        {},
    ),
    "hidden-act-unknown": (_edit_config(hidden_act="no_such_activation"), ".", {}),
    "hidden-act-non-finite-parameter": (_edit_config(hidden_act="crrelu(eps=1e999)"), ".", {}),
    "weights-garbage": (_write("model.safetensors", b"\x10" + bytes(7) + b"{garbage}"), ".", {}),
    "weights-truncated": (_truncate_weights, ".", {}),
    "weights-missing": (lambda d: (d / "model.safetensors").unlink(), ".", {}),
    "weights-wrong-shapes": (_edit_config(hidden_size=32), ".", {}),
    "weights-pickle-instead": (_write("pytorch_model.bin", b"\x80\x02cos\nsystem\n."), ".", {}),
    "auto-class-not-a-name": (None, ".", {"auto_class": "os.system"}),
    "auto-class-a-function": (None, ".", {"auto_class": "pipeline"}),
    "auto-class-an-int": (None, ".", {"auto_class": 5}),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama") / "model"
    save_tiny_llama(path)
    return path


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def classify(case_id: str, saved: Path, root: Path) -> str:
    edit, rel, kwargs = CASES[case_id]
    d = root / "model"
    shutil.copytree(saved, d)
    if case_id == "weights-pickle-instead":
        (d / "model.safetensors").unlink()
    if edit is not None:
        edit(d)
    target = d / rel if rel != "." else d
    before = _snapshot(root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf.from_pretrained(str(target), **kwargs)
    except (ValueError, OSError, KeyError) as e:  # what the CLI reports as one line
        msg = str(e)
        named = "auto_class" if "auto_class" in kwargs else str(d)  # the argument, or the folder
        ok = not isinstance(e, KeyError) and msg and "\n" not in msg.strip() and named in msg
        result = "clear" if ok else f"unclear: {type(e).__name__}: {msg[:200]!r}"
    except Exception as e:  # noqa: BLE001 - the census counts exactly these
        result = f"traceback: {type(e).__name__}: {str(e)[:160]!r}"
    else:
        result = "silent"
    finally:
        os.chdir(cwd)
    if (root / MARKER).exists():
        result = f"executed ({result})"
    elif _snapshot(root) != before:
        result = f"wrote ({result})"
    return result


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_hostile_from_pretrained(case_id: str, saved: Path, tmp_path: Path) -> None:
    assert classify(case_id, saved, tmp_path) == "clear"


if __name__ == "__main__":
    import tempfile
    from collections import Counter

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        save_tiny_llama(src)
        counts: Counter[str] = Counter()
        for case_id in sorted(CASES):
            with tempfile.TemporaryDirectory() as root:
                result = classify(case_id, src, Path(root))
            counts[result.split(":")[0].split(" ")[0]] += 1
            print(f"{case_id:34s} {result}", flush=True)
        print(dict(counts), "of", len(CASES))
    sys.exit(0)
