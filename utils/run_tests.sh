#!/usr/bin/env bash
# The test command (README, and .ci/run calls exactly this): bootstraps the
# environment on a fresh machine, then runs the whole test suite on the CPU.
# Extra arguments go to pytest (e.g. `utils/run_tests.sh -k fbank -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
utils/setup_env.sh
. ./path.sh
exec python -m pytest -q -p no:cacheprovider "$@"
