#!/usr/bin/env bash
# Bootstraps everything kocall needs on a fresh machine, idempotently:
#   1. Debian packages (espeak-ng, sox, python3-venv, KenLM build deps) where we are root;
#   2. a virtualenv in .venv with torch installed FIRST, the build chosen explicitly: the CUDA
#      build (PyTorch's cu128 index) where `nvidia-smi` sees a GPU, else the CPU build (PyTorch's
#      cpu index; a plain `pip install torch` would pull GBs of CUDA wheels). Where PyTorch's
#      index cannot be reached, pip's configured sources are used instead (a mirror or wheel
#      dir). Then kocall, and its `cuda` extra (numba-cuda) where a GPU driver is present;
#   3. KenLM's lmplz/build_binary built from the kenlm sdist into tools/kenlm/bin.
# A stamp holding a hash of this script and pyproject.toml makes a second call a no-op.
# Usage: [PYTHON=python3.12] [TORCH_BUILD=cpu|cu128] utils/setup_env.sh [--force]
#   PYTHON       the interpreter of the venv (Python >= 3.11; default python3)
#   TORCH_BUILD  force a torch build: cpu, or a CUDA build name of PyTorch's index (cu126, cu128)
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
# venv's pip bootstrap (ensurepip) ships apart on Debian/Ubuntu: python3-venv, which brings
# python3 itself on a bare system.
if ! "${PYTHON:-python3}" -c 'import ensurepip, venv' >/dev/null 2>&1; then apt_pkgs="$apt_pkgs python3-venv"; fi
# The kenlm module (the recipe extra) builds from its sdist against the interpreter's headers.
if ! "${PYTHON:-python3}" -c 'import os, sys, sysconfig
sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' >/dev/null 2>&1; then
  apt_pkgs="$apt_pkgs python3-dev"
fi
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
command -v "$py" >/dev/null || { echo "[setup] ERROR: PYTHON='$py' not found" >&2; exit 1; }
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "[setup] ERROR: $py is Python $("$py" -c 'import platform; print(platform.python_version())'); kocall needs >= 3.11 (set PYTHON=)" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
  # Debian and Ubuntu ship venv's pip bootstrap (ensurepip) apart: python3-venv / python3.X-venv.
  if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
    pyver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing python$pyver-venv (venv's pip bootstrap)"
      apt-get install -y -qq --no-install-recommends "python$pyver-venv" >/dev/null 2>&1 ||
        apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    else
      echo "[setup] ERROR: $py cannot create a venv; install it with: sudo apt-get install python$pyver-venv" >&2
      exit 1
    fi
  fi
  log "creating $venv with $py"
  "$py" -m venv "$venv"
fi
pip="$venv/bin/python -m pip --disable-pip-version-check -q"
$pip install -U "pip>=24" "setuptools>=77" wheel
torch_version=2.13.0   # as pyproject.toml pins it
has_gpu=false
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then has_gpu=true; fi
torch_build=${TORCH_BUILD:-$($has_gpu && echo cu128 || echo cpu)}
torch_index=https://download.pytorch.org/whl/$torch_build
log "installing torch==$torch_version first ($torch_build build, from $torch_index)"
# PyTorch's own index only: pip's configured sources (PIP_* variables, config files) left out.
if ! env $(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/-u \1/p') PIP_CONFIG_FILE=/dev/null \
     "$venv/bin/python" -m pip --disable-pip-version-check -q install --timeout 30 --retries 1 \
     --index-url "$torch_index" "torch==$torch_version" 2>"$venv/.torch-index.log"; then
  log "PyTorch's index cannot be reached ($(tail -n 1 "$venv/.torch-index.log")); trying pip's configured sources"
  if [ "$torch_build" = cpu ]; then  # the CPU build's local version where a source carries it
    $pip install "torch==$torch_version+cpu" 2>/dev/null || $pip install "torch==$torch_version"
  else
    $pip install "torch==$torch_version"
  fi
fi
got=$("$venv/bin/python" -W ignore -c 'import torch; print(torch.__version__, "CUDA " + torch.version.cuda if torch.version.cuda else "CPU only")' 2>/dev/null)
log "torch: $got"
if [ "$torch_build" = cpu ] && [[ "$got" != *"CPU only"* ]]; then
  log "warning: asked for the CPU build of torch but got $got (see pip's configured sources)"
fi
log "installing kocall and its dependencies"
$pip install -e ".[dev,recipe]"
# The Whisper log-mel reference of kernels/kocall_kernels/fbank's tests (test-only): faster-whisper without its
# dependencies (ctranslate2, PyAV, ...); kernels/kocall_kernels/fbank/peer.py loads its NumPy feature extractor by path.
$pip install --no-deps "faster-whisper==1.2.1"
$pip install --no-deps "openai-whisper==20250625"   # the reference decoder of the tests
# The CUDA extra (numba-cuda with the CUDA 12 compiler libraries the kernels' JIT needs) only
# where a GPU driver is present.
if $has_gpu; then
  $pip install -e ".[cuda]" || log "warning: the cuda extra did not install; the kernels run on the CPU only"
fi

# --- 3. KenLM binaries -------------------------------------------------
if [ ! -x tools/kenlm/bin/lmplz ] || [ ! -x tools/kenlm/bin/build_binary ]; then
  PYTHON="$venv/bin/python" bash utils/build_kenlm.sh tools/kenlm
fi

echo "$want" > "$stamp"
log "done"
