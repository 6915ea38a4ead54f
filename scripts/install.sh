#!/usr/bin/env bash
# One-command set-up on a fresh Debian machine with Python 3.11 (CPU or CUDA):
# system packages (Redis, PostgreSQL, OpenEXR tools, Chromium for the dashboard test), a virtualenv in .venv, and the Python
# packages in the order their builds need. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${VENV:-.venv}
APT_PACKAGES="redis-server postgresql openexr chromium chromium-driver"

say() { printf '\n==> %s\n' "$*"; }

if command -v apt-get >/dev/null 2>&1; then
  missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    say "system packages: $missing"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
else
  echo "no apt-get: install these yourself for the test suite: $APT_PACKAGES" >&2
fi

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)' \
  || { echo "Python 3.11 or 3.12 is required (found $("$PYTHON" --version))" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  say "virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade "pip>=24" "setuptools>=69" wheel

# torch first: sam2 and groundingdino-py import it while they build. PyPI's torch 2.14.1 wheel
# is the CUDA build, which also runs on CPU-only machines.
say "torch"
$PIP install -q torch==2.14.1 torchvision==0.29.1

# sam2 builds a CUDA extension only where there is a CUDA toolkit and a GPU.
if [ -z "${SAM2_BUILD_CUDA:-}" ]; then
  if command -v nvcc >/dev/null 2>&1 && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    export SAM2_BUILD_CUDA=1
  else
    export SAM2_BUILD_CUDA=0
  fi
fi
say "sam2 (SAM2_BUILD_CUDA=$SAM2_BUILD_CUDA) and groundingdino-py"
$PIP install -q --no-build-isolation sam2==1.1.0
$PIP install -q --no-build-isolation groundingdino-py==0.4.0 transformers==4.57.6

say "mattefarm"
$PIP install -q -e ".[dev]"

"$VENV/bin/mattefarm" --version
echo "installed: activate with 'source $VENV/bin/activate', or call $VENV/bin/mattefarm"
