#!/usr/bin/env bash
# Every GPU benchmark and the kernel tests, in one command, on a machine with an NVIDIA GPU:
#
#   bench/run_gpu.sh
#
# 1. bootstraps the environment (utils/setup_env.sh: .venv, KenLM, the cuda extra where
#    nvidia-smi works) and the decoder peers (bench/install_peers.sh);
# 2. makes sure Numba's CUDA target works: it needs NVVM and libdevice from a CUDA toolkit
#    (CUDA_HOME or /usr/local/cuda); without one it installs NVIDIA's nvcc wheel into .venv
#    (matched to the driver's CUDA version) and points CUDA_HOME (libdevice) and
#    LD_LIBRARY_PATH (libnvvm.so) at it;
# 3. runs, without NUMBA_ENABLE_CUDASIM:
#      bench_fbank.py --device cuda          (when the file exists; kaldi and whisper flavour rows)
#      bench_ngram.py --gpu yes              (CPU twin and kenlm rows too; GPU rows checked against the CPU twin)
#      bench_ctc_decoder.py --gpu yes        (beams 8/16/32 at GPU batch 1/32/256; the CPU table and
#                                             its peers too; GPU hypotheses checked against the CPU twin)
#      pytest kernels -q
# Outputs: bench/out/ (git-ignored): <name>.txt (the printed tables and logs), <name>.json,
# nvidia-smi.txt, and summary.txt (one line per step). The exit status is 0 only when every step passed.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=bench/out
mkdir -p "$out"
summary=$out/summary.txt
: > "$summary"
log() { echo "[run_gpu] $*" | tee -a "$summary" >&2; }

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi > "$out/nvidia-smi.txt" 2>&1; then
  log "no NVIDIA GPU here (nvidia-smi missing or failing): nothing to run"
  exit 1
fi
log "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"

utils/setup_env.sh || { log "FAILED: utils/setup_env.sh"; exit 1; }
peers=yes
bash bench/install_peers.sh > "$out/install_peers.txt" 2>&1 || { peers=no; log "peers not installed (see $out/install_peers.txt): the CTC table runs without them"; }
. ./path.sh
unset NUMBA_ENABLE_CUDASIM

cuda_ok() {
  python - <<'EOF' > "$out/numba_cuda_check.txt" 2>&1
import numpy as np
from numba import cuda

@cuda.jit
def add_one(a):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] += 1.0

x = cuda.to_device(np.zeros(64, np.float32))
add_one[2, 32](x)
assert x.copy_to_host().sum() == 64.0
print("numba CUDA ok:", cuda.get_current_device().name)
EOF
}
if ! cuda_ok; then
  # Driver CUDA version (e.g. 12.4) -> the nvcc wheel of that minor (a 13.x driver runs 12.9's PTX).
  drv=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -1)
  major=${drv% *}; minor=${drv#* }
  if [ "${major:-0}" -gt 12 ] 2>/dev/null; then minor=9; fi
  log "numba cannot run a CUDA kernel yet (see $out/numba_cuda_check.txt): installing nvidia-cuda-nvcc-cu12==12.${minor:-4}.*"
  python -m pip --disable-pip-version-check -q install "nvidia-cuda-nvcc-cu12==12.${minor:-4}.*" \
    || python -m pip --disable-pip-version-check -q install nvidia-cuda-nvcc-cu12
  CUDA_HOME=$(python -c "import importlib.util as u; print(list(u.find_spec('nvidia.cuda_nvcc').submodule_search_locations)[0])")
  # numba finds libdevice under CUDA_HOME; the wheel's unversioned libnvvm.so it loads by name
  LD_LIBRARY_PATH="$CUDA_HOME/nvvm/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export CUDA_HOME LD_LIBRARY_PATH
  cuda_ok || { log "FAILED: numba cannot run a CUDA kernel (see $out/numba_cuda_check.txt)"; exit 1; }
fi
log "$(tail -1 "$out/numba_cuda_check.txt")${CUDA_HOME:+ (CUDA_HOME=$CUDA_HOME)}"

status=0
step() {  # step NAME COMMAND...: run, keep the output, record the result
  local name=$1; shift
  local t0=$SECONDS
  if "$@" > "$out/$name.txt" 2>&1; then
    log "ok     $name ($((SECONDS - t0)) s): $out/$name.txt"
  else
    log "FAILED $name ($((SECONDS - t0)) s, exit $?): $out/$name.txt"
    status=1
  fi
}

if [ -f bench/bench_fbank.py ]; then
  step bench_fbank python bench/bench_fbank.py --device cuda --out-json "$out/bench_fbank.json"
else
  log "skipped bench_fbank (bench/bench_fbank.py does not exist)"
fi
step bench_ngram python bench/bench_ngram.py --gpu yes --json "$out/bench_ngram.json"
ctc_args=(--gpu yes --json "$out/bench_ctc_decoder.json")
[ "$peers" = yes ] || ctc_args+=(--no-peers)
step bench_ctc_decoder python bench/bench_ctc_decoder.py "${ctc_args[@]}"
if grep -q "| NO |" "$out/bench_ctc_decoder.txt" 2>/dev/null; then
  log "FAILED bench_ctc_decoder: GPU hypotheses differ from the CPU twin (rows marked NO)"
  status=1
fi
if grep -q "next states equal: False" "$out/bench_ngram.txt" 2>/dev/null; then
  log "FAILED bench_ngram: GPU next states differ from the CPU twin"
  status=1
fi
KOCALL_CUDA_TESTS=device step pytest_kernels python -m pytest kernels -q -p no:cacheprovider

log "done: $([ $status = 0 ] && echo 'every step passed' || echo 'some steps FAILED') (outputs in $out/)"
exit $status
