#!/usr/bin/env bash
# Set up classicnets on a fresh Debian machine: system packages (as root), a virtual environment at
# .venv and the package itself in editable mode.  `scripts/setup.sh --dev` adds the test tools.
# Safe to run again: it only installs what is missing or what pyproject.toml has changed.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

# System packages: the real Fashion-MNIST (the default data, offline) and jemalloc (see README, "Speed").
missing=""
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing="$missing dataset-fashion-mnist"
ldconfig -p 2>/dev/null | grep -q libjemalloc.so.2 || missing="$missing libjemalloc2"
# --dev: the headless browser and its driver that tests/test_serve_browser.py drives (the `serve` page).
if [ -n "$extras" ]; then
  [ -x /usr/bin/chromium ] || missing="$missing chromium"
  [ -x /usr/bin/chromedriver ] || missing="$missing chromium-driver"
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages:$missing"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "setup: warning: cannot install$missing (needs root and apt-get); continuing without" >&2
  fi
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
  echo "setup: error: classicnets needs Python >= 3.10, $("$python" --version 2>&1) found; set PYTHON=..." >&2
  exit 1
}
[ -x .venv/bin/python ] || "$python" -m venv .venv

stamp=".venv/.classicnets-installed"
want="$(sha256sum pyproject.toml | cut -c1-64)$extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing classicnets$extras and its dependencies into .venv (first time: a few minutes)"
  if ! .venv/bin/python -m pip install --disable-pip-version-check -q -e ".$extras" > .venv/pip.log 2>&1; then
    grep -v "is ignored" .venv/pip.log | tail -20 >&2
    echo "setup: error: pip install failed; full log in .venv/pip.log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'))"
