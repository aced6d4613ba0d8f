"""Benchmark: small torch calls beside numba's parallel kernels, with OpenMP workers spinning or
sleeping (OMP_WAIT_POLICY), the reason the attention modes set it to PASSIVE.

    python bench/bench_openmp_wait.py [--checkpoint tools/whisper-base.pt] [--steps 20]

Each policy runs in a fresh process (libgomp reads the variable when it loads): torch at one
thread times a Whisper decoder step (one hypothesis, kv cache, 165 audio frames), CPU seconds of
the whole process per step, before and after one call of a numba `parallel=True` kernel (the
CTC decoder's CPU twin on a tiny batch). Without a checkpoint, a random decoder of Whisper
base's shape.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
import torch
torch.set_num_threads(1)
from kocall.whisper_ctc.decoder import TextDecoder
dims = {"n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 512, "n_text_head": 8, "n_text_layer": 6}
decoder = TextDecoder(dims).eval()
if sys.argv[1] != "-":
    from kocall.whisper_ctc.checkpoint import load_whisper_checkpoint
    from kocall.whisper_ctc.decoder import load_decoder_state
    dims, state = load_whisper_checkpoint(sys.argv[1])
    decoder = TextDecoder(dims).eval()
    load_decoder_state(decoder, state, sys.argv[1])
steps = int(sys.argv[2])
audio = torch.randn(1, 165, dims["n_text_state"])

def per_step():
    with torch.inference_mode():
        cache = {}
        decoder(torch.tensor([[1, 2, 3, 4]]), audio, kv_cache=cache)
        start = time.process_time()
        for i in range(steps):
            decoder(torch.tensor([[400 + i]]), audio, kv_cache=cache)
        return (time.process_time() - start) / steps * 1e3

before = per_step()
from kocall_kernels.ctc_decoder import DecoderConfig, cpu
lp = np.log(np.full((2, 20, 8), 1 / 8, np.float32))
cpu.decode_batch(lp, np.array([20, 20]), DecoderConfig(beam=2))
after = per_step()
print(json.dumps({"before_ms": before, "after_ms": after}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="-")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    for policy in ("(unset)", "PASSIVE"):
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        if policy != "(unset)":
            env["OMP_WAIT_POLICY"] = policy
        run = subprocess.run([sys.executable, "-c", CHILD, args.checkpoint, str(args.steps)], env=env,
                             capture_output=True, text=True, check=True)
        got = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"OMP_WAIT_POLICY={policy}: decoder step {got['before_ms']:.1f} ms CPU before a numba parallel call, "
              f"{got['after_ms']:.1f} ms after")


if __name__ == "__main__":
    main()
