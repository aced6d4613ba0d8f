# Sourced by run.sh and the steps: puts the project's virtualenv and KenLM binaries first.
KOCALL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export KOCALL_ROOT
export PATH="$KOCALL_ROOT/.venv/bin:$KOCALL_ROOT/tools/kenlm/bin:$KOCALL_ROOT/utils:$PATH"
export PYTHONUNBUFFERED=1
# Numba caches compiled kernels here, so a second run starts fast.
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$KOCALL_ROOT/.venv/numba_cache}"
export LC_ALL=C.UTF-8
