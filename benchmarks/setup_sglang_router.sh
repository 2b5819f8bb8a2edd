#!/usr/bin/env bash
# Install SGLang's Rust router (`sglang-router` on PyPI), the peer of benchmarks/router_compare.py, into its
# own virtual environment. Never part of the project's dependencies. The venv is benchmarks/.venv-sglang-router
# (git-ignored); the router itself is a prebuilt wheel (no Rust toolchain needed).
#
# Start it as router_compare.py does, offline (it must not reach a model hub):
#   HF_HUB_OFFLINE=1 benchmarks/.venv-sglang-router/bin/python -m sglang_router.launch_router \
#       --worker-urls http://127.0.0.1:30001 ... --policy cache_aware --host 127.0.0.1 --port 8001
#
# Usage: bash benchmarks/setup_sglang_router.sh     (idempotent; SGLANG_ROUTER_VERSION, VENV override)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SGLANG_ROUTER_VERSION="${SGLANG_ROUTER_VERSION:-0.3.2}"
VENV="${VENV:-$HERE/.venv-sglang-router}"

# `python -m` puts the current folder first on sys.path; the repo root holds a folder named `operator`.
cd "$HERE"
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet "sglang-router==$SGLANG_ROUTER_VERSION"
HF_HUB_OFFLINE=1 "$PY" -m sglang_router.launch_router --help > /dev/null
echo "sglang-router $SGLANG_ROUTER_VERSION ready: $PY -m sglang_router.launch_router"
