#!/usr/bin/env bash
# Peers for bench/bench_ctc_decoder.py, installed into .venv.
# pyctcdecode pins numpy<2 (it runs fine on numpy 2), hence --no-deps plus its one real dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pip install --no-deps pyctcdecode
.venv/bin/pip install pygtrie
.venv/bin/pip install flashlight-text
