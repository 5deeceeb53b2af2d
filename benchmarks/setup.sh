#!/usr/bin/env bash
# Build the peers' environment for benchmarks/run.py from nothing.
#
#   bash benchmarks/setup.sh [VENV]      # default VENV: /work/bench-venv
#
# It is separate from scpermut's own environment: scvi-tools, CellTypist, Harmony and the
# original scMusketeers are benchmark peers, never dependencies of the package.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
venv="${1:-/work/bench-venv}"

python3 -m venv "$venv"
pip="$venv/bin/pip"
# First, so that nothing later pulls a multi-GB CUDA build of torch.
"$pip" install "torch==2.13.0"
"$pip" install -r "$here/requirements.txt" -c "$here/requirements.lock.txt"
"$pip" install --no-deps "sc-musketeers==0.7.0"
"$pip" install --no-deps -e "$repo"
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
for name in ("scpermut", "sc-musketeers", "scvi-tools", "torch", "celltypist", "harmonypy", "tensorflow-cpu", "keras", "scanpy", "scikit-learn"):
    print(f"{name}=={version(name)}")
PY
echo "peers' environment ready: $venv/bin/python benchmarks/run.py --quick"
