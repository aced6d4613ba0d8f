"""CRR of Whisper's decoder ALONE (greedy, no CTC, no LM) on kocall data dirs: a hybrid model
dir's fine-tuned decoder, or the zero-shot decoder of a full Whisper checkpoint.

    python bench/hybrid_attention_greedy.py --model-dir exp/whisper_base_hybrid_jamo/final \
        data/fbank_whisper/dev data/fbank_whisper/test_heldout
    python bench/hybrid_attention_greedy.py --checkpoint tools/whisper-base.pt \
        --tokenizer tools/whisper-base-ct2 [--pad30] data/fbank_whisper/dev

The data dirs hold Whisper log-mel features (feats.scp, conf/fbank_whisper.yaml) and `text`.
The encoder runs on the true length (as the hybrid model does), or with --pad30 on Whisper's
30-s window (the log-mel of silence appended: what openai-whisper and faster-whisper do).
Hypotheses are normalised with kocall's normalize_text and scored with kocall.scoring (CRR).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "recipes"), str(ROOT / "kernels")]

from kocall.errors import KocallError  # noqa: E402
from kocall.fileio import read_table  # noqa: E402
from kocall.progress import progress_bar  # noqa: E402
from kocall.scoring import score_texts  # noqa: E402
from kocall.text_norm import normalize_text  # noqa: E402
from kocall.whisper_ctc.tokenizer import WhisperTokenizer  # noqa: E402
from kocall.whisper_hybrid.model import attention_greedy, valid_frames  # noqa: E402

WINDOW_FRAMES = 3000   # Whisper's 30 s of 10-ms log-mel frames
MAX_TOKENS_PER_SECOND = 12


def zero_shot_model(checkpoint: Path):
    """A WhisperHybrid holding a full checkpoint's encoder and decoder (its CTC branch unused)."""
    from kocall.whisper_ctc.checkpoint import init_from_checkpoint, load_whisper_checkpoint
    from kocall.whisper_ctc.decoder import load_decoder_state
    from kocall.whisper_hybrid.model import WhisperHybrid, WhisperHybridConfig

    dims, state = load_whisper_checkpoint(checkpoint)
    model = WhisperHybrid(WhisperHybridConfig(vocab_size=2, sot_sequence=[0], eot=0, **dims))
    init_from_checkpoint(model, {k: v for k, v in state.items() if k.startswith("encoder.")}, checkpoint)
    load_decoder_state(model.decoder, state, str(checkpoint))
    return model.eval()


def decode_set(model, tokenizer: WhisperTokenizer, data_dir: Path, batch_size: int, pad30: bool,
               max_utts: int) -> tuple[dict[str, str], dict[str, str], float, float]:
    import kaldiio

    refs = read_table(data_dir / "text", allow_empty_value=True)
    scp = read_table(data_dir / "feats.scp")
    feats = {utt: np.asarray(kaldiio.load_mat(spec), dtype=np.float32) for utt, spec in scp.items()}
    order = sorted(feats, key=lambda u: feats[u].shape[0])[: max_utts or None]
    sot = tokenizer.sot_sequence()
    hyps: dict[str, str] = {}
    audio_seconds, start = 0.0, time.perf_counter()
    for first in progress_bar(range(0, len(order), batch_size), desc=data_dir.name, unit="batch"):
        batch = order[first:first + batch_size]
        mats = [feats[u] for u in batch]
        audio_seconds += sum(m.shape[0] for m in mats) / 100
        if pad30:   # silence in Whisper's normalised log-mel is the utterance's max - 2
            mats = [np.concatenate([m, np.full((WINDOW_FRAMES - m.shape[0], m.shape[1]), m.max() - 2.0,
                                               np.float32)]) if m.shape[0] < WINDOW_FRAMES else m[:WINDOW_FRAMES]
                    for m in mats]
        lens = torch.tensor([m.shape[0] for m in mats])
        x = torch.zeros(len(mats), int(lens.max()), mats[0].shape[1])
        for row, mat in enumerate(mats):
            x[row, :mat.shape[0]] = torch.from_numpy(np.array(mat))   # a writable copy
        with torch.no_grad():
            hidden, out_lens = model.frozen_front(x, lens, 0)
            audio, _ = model.encode_from(hidden, out_lens, 0)
            mask = valid_frames(out_lens, audio.size(1)) if len(batch) > 1 else None
            # A cap from the audio's length (Korean speech: under 8 syllables, 3 bytes each, per
            # second): a decoder caught in a repetition loop stops there instead of at 448 tokens.
            cap = int(MAX_TOKENS_PER_SECOND * max(feats[u].shape[0] for u in batch) / 100) + 8
            ids = attention_greedy(model.decoder, audio, mask, sot, tokenizer.eot, max_tokens=cap)
        for utt, tokens in zip(batch, ids):
            hyps[utt] = normalize_text(tokenizer.decode(tokens))
    return {u: refs[u] for u in order}, hyps, time.perf_counter() - start, audio_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", type=Path, help="a whisper_hybrid model dir (its fine-tuned decoder)")
    source.add_argument("--checkpoint", type=Path, help="a full Whisper checkpoint (the zero-shot decoder)")
    parser.add_argument("--tokenizer", type=Path, help="with --checkpoint: Whisper's tokenizer.json or its folder")
    parser.add_argument("--pad30", action="store_true", help="run the encoder on Whisper's 30-s window")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-utts", type=int, default=0, help="first N utterances (by length) of each set; 0: all")
    parser.add_argument("data_dirs", nargs="+", type=Path)
    args = parser.parse_args()
    if not 1 <= args.batch_size <= 256 or not 1 <= args.threads <= 256 or args.max_utts < 0:
        raise SystemExit("--batch-size and --threads must be in [1, 256], --max-utts >= 0")
    torch.set_num_threads(args.threads)
    try:
        if args.model_dir:
            from kocall.model_dir import load_model_dir

            model, _, config = load_model_dir(args.model_dir)
            if config.get("arch") != "whisper_hybrid":
                raise KocallError(f"model dir '{args.model_dir}' is a {config.get('arch')}, not a whisper_hybrid")
            tokenizer = WhisperTokenizer.from_dir(args.model_dir)
        else:
            if args.tokenizer is None:
                raise KocallError("--checkpoint needs --tokenizer (a tokenizer.json or its folder)")
            model = zero_shot_model(args.checkpoint)
            tokenizer = (WhisperTokenizer(args.tokenizer) if args.tokenizer.is_file()
                         else WhisperTokenizer.from_dir(args.tokenizer))
        for data_dir in args.data_dirs:
            refs, hyps, seconds, audio = decode_set(model, tokenizer, data_dir, args.batch_size, args.pad30,
                                                    args.max_utts)
            result = score_texts(refs, hyps)
            print(f"{data_dir.name}: CRR {result.crr:.2f} CER {result.cer:.2f} utts {result.utts} "
                  f"RTF {seconds / max(audio, 1e-9):.3f} ({args.threads} threads, batch {args.batch_size}"
                  f"{', 30-s window' if args.pad30 else ', true length'})", flush=True)
    except KocallError as err:
        raise SystemExit(f"error: {err.format_message()}") from None


if __name__ == "__main__":
    main()
