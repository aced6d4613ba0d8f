#!/usr/bin/env bash
# Bootstraps everything kocall needs on a fresh machine, idempotently:
#   1. Debian packages (espeak-ng, sox, KenLM build deps) where we are root;
#   2. a virtualenv in .venv with torch==2.13.0 installed FIRST (the local CPU
#      wheel; a plain `torch` would pull several GB of CUDA wheels), then kocall;
#   3. KenLM's lmplz/build_binary built from the kenlm sdist into tools/kenlm/bin.
# A stamp holding a hash of this script and pyproject.toml makes a second call a no-op.
# Usage: utils/setup_env.sh [--force]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
force=false; [ "${1:-}" = "--force" ] && force=true

venv=$root/.venv
stamp=$venv/.kocall-setup
want=$(cat utils/setup_env.sh pyproject.toml | sha1sum | cut -d' ' -f1)
if ! $force && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && [ -x tools/kenlm/bin/lmplz ] && [ -x tools/kenlm/bin/build_binary ]; then
  exit 0
fi
log() { echo "[setup] $*" >&2; }

# --- 1. Debian packages --------------------------------------------------
apt_pkgs="espeak-ng sox cmake build-essential libboost-program-options-dev libboost-system-dev
 libboost-thread-dev libboost-test-dev libeigen3-dev zlib1g-dev libbz2-dev liblzma-dev"
# Optional: the one-node Slurm that the job-dispatch tests start (utils/local_slurm.sh);
# installed where we are root, else those tests skip.
optional_pkgs="slurm-wlm munge"
missing=""
for p in $apt_pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
missing_optional=""
for p in $optional_pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing_optional="$missing_optional $p"; done
if [ -n "$missing$missing_optional" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "installing Debian packages:$missing$missing_optional"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends $missing $missing_optional >/dev/null
elif [ -n "$missing" ]; then
  echo "[setup] ERROR: missing Debian packages:$missing" >&2
  echo "[setup] install them with: sudo apt-get install$missing" >&2
  exit 1
fi

# --- 2. virtualenv -----------------------------------------------------
py=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  "$py" -m venv "$venv"
fi
pip="$venv/bin/python -m pip --disable-pip-version-check -q"
$pip install -U "pip>=24" "setuptools>=64" wheel
log "installing torch==2.13.0 first (CPU build)"
$pip install "torch==2.13.0"
log "installing kocall and its dependencies"
$pip install -e ".[dev,recipe]"
# The Whisper log-mel reference of kernels/kocall_kernels/fbank's tests (test-only): faster-whisper without its
# dependencies (ctranslate2, PyAV, ...); kernels/kocall_kernels/fbank/peer.py loads its NumPy feature extractor by path.
$pip install --no-deps "faster-whisper==1.2.1"
$pip install --no-deps "openai-whisper==20250625"   # the reference decoder of the tests
# The CUDA extra only where a GPU driver is present.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  $pip install -e ".[cuda]" || log "warning: cupy not installed; CuPy kernels disabled"
fi

# --- 3. KenLM binaries -------------------------------------------------
if [ ! -x tools/kenlm/bin/lmplz ] || [ ! -x tools/kenlm/bin/build_binary ]; then
  PYTHON="$venv/bin/python" bash utils/build_kenlm.sh tools/kenlm
fi

echo "$want" > "$stamp"
log "done"
