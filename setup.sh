#!/usr/bin/env bash
# Install slearn-mlx and what it needs into the current Python environment.
# Linux: the CPU build of mlx, plus OpenBLAS from apt (mlx's bundled BLAS is ~10x slower).
# macOS (Apple Silicon): mlx with Metal; nothing else.
set -euo pipefail
cd "$(dirname "$0")"
extras="test"
if [ "$(uname -s)" = "Linux" ]; then
  extras="cpu,test"
  if ! ldconfig -p 2>/dev/null | grep -q "libopenblas"; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = "0" ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null
    elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null
    else
      echo "setup.sh: no OpenBLAS and no apt-get: install OpenBLAS for ~10x faster training on CPU" >&2
    fi
  fi
fi
python -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
