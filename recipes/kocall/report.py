"""The finals triple in one report: recognition rate, model size and decoding speed.

`kocall report --model DIR [--model DIR_INT8 ...] --data DATA --sets test[,test2] --lm LM.arpa
 --out-md F --out-json F` writes one Markdown table per model plus a comparison table whose
last row is the accuracy, size and speed cost of quantisation (int8 minus float).

What is measured (docs/report.md explains how to read it):

* CRR (hackathon metric, kocall.scoring) per test set, greedy and CTC prefix beam search
  with the n-gram LM. The LM weight and bonus come from AMDIR/decode_dev_beam/best_weights.json
  (tuned on dev by stage 5) when present, else from the command-line defaults.
* Parameters (the number of weights in model.pt; an int8 weight counts as one) and the
  on-disk size of the model dir in MB (10^6 bytes; the LM is referenced, not counted).
* Real-time factor RTF = processing seconds / audio seconds over all utterances of the
  chosen sets, for the CPU with 1 and 2 threads (torch and numba both limited), and on
  the GPU when --device cuda finds one (float models only: int8 kernels are CPU-only).
  Processing = features + network + search, one utterance at a time (the serving case),
  after an untimed warm-up pass over the same utterances (the steady state of a server);
  audio is read into memory beforehand, so disk speed does not count.
* Peak memory: each model is measured in a fresh process; `peak_rss_mb` is that process's
  peak resident set (getrusage ru_maxrss: interpreter, torch, model, LM tables, features,
  search), and `peak_rss_delta_mb` the growth over the same process right after imports,
  i.e. what the model, LM and decoding add. On the GPU, torch's peak allocated memory.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import click

from kocall.errors import KocallError
from kocall.fileio import atomic_write, read_json
from kocall.options import bounded, check_bound
from kocall.rxspec import allow_pipes_option

MODES = ("greedy", "beam_lm", "rescore", "joint")
MODE_TITLES = {"greedy": "greedy", "beam_lm": "beam+LM", "rescore": "rescore", "joint": "joint"}
# Modes with Whisper's decoder (kocall.joint_decode): measured for a model whose decode stage tuned
# them (AMDIR/decode_dev_<mode>/best_weights.json, written by steps/decode.sh --mode).
ATTENTION_MODES = ("rescore", "joint")
MB = 1e6


@dataclass
class ReportConfig:
    data: str
    sets: list[str]
    lm: str | None = None
    device: str = "cpu"
    max_utts: int = 0              # per set; 0 = all
    threads: tuple[int, ...] = (1, 2)
    beam: int = 16
    lm_weight: float = 0.5         # used only when best_weights.json is absent
    word_bonus: float = 0.0
    isolate: bool = True           # one fresh process per model (clean peak-memory figures)


@dataclass
class Utt:
    utt_id: str
    set_name: str
    samples: Any                   # float32 numpy array at int16 scale
    seconds: float
    text: str


@dataclass
class Recognizer:
    """features -> network -> search, for one model on one device."""

    model: Any
    tokenizer: Any                 # kocall.lang.Tokenizer: ids -> text (jamo composed)
    fbank_cfg: Any
    mean: Any
    std: Any
    device: str
    tables: Any = None
    decoder_cfg: Any = None
    joint: Any = None              # kocall.joint_decode.JointModel for the attention modes
    mode_settings: Any = None      # {mode: ModeSettings} of the attention modes

    @property
    def modes(self) -> tuple[str, ...]:
        """What this recogniser runs: greedy; beam_lm with an LM; the attention modes the decode
        stage tuned (their weights) for this model."""
        if self.tables is None:
            return ("greedy",)
        return ("greedy", "beam_lm") + tuple(self.mode_settings or ())

    def recognize(self, samples: Any, mode: str) -> str:
        import numpy as np
        import torch

        from kocall_kernels.fbank import compute_fbank

        backend = "cuda" if self.device == "cuda" else "cpu"
        feats, frames = compute_fbank(samples[None, :], np.array([samples.size]), self.fbank_cfg, backend=backend)
        x = torch.as_tensor(np.asarray(feats), device=self.device)
        x = (x - self.mean) / self.std
        if mode in ATTENTION_MODES:
            from kocall.joint_decode import decode_one

            return decode_one(self.joint, self.model, x[0].cpu().numpy(), self.mode_settings[mode])
        with torch.inference_mode():
            log_probs, out_lens = self.model(x, torch.as_tensor(np.asarray(frames), device=self.device).long())
        if mode == "greedy":
            from kocall_kernels.ctc_decoder.greedy import greedy_decode

            ids = greedy_decode(log_probs, out_lens)[0]
        else:
            from kocall_kernels.ctc_decoder.cpu import decode_batch

            hyps = decode_batch(log_probs.float().cpu().numpy(), out_lens.cpu().numpy(), self.decoder_cfg,
                                self.tables)
            ids = hyps[0][0].tokens if hyps[0] else []
        return self.tokenizer.decode(ids)


# ------------------------------------------------------------------------ measurement


def beam_weights(model_dir: Path, cfg: ReportConfig) -> dict[str, Any]:
    """LM weight/bonus tuned on dev (AMDIR/decode_dev_beam/best_weights.json), else the defaults."""
    from kocall_kernels.ctc_decoder import DecoderConfig

    values: dict[str, Any] = {"beam": cfg.beam, "lm_weight": cfg.lm_weight, "word_bonus": cfg.word_bonus}
    path = model_dir.resolve().parent / "decode_dev_beam" / "best_weights.json"
    source = "command-line defaults"
    if path.is_file():
        try:
            tuned = read_json(path)
        except json.JSONDecodeError as err:
            raise KocallError(f"file '{path}': is not valid JSON ({err})") from None
        known = {f.name for f in fields(DecoderConfig)}
        values.update({k: v for k, v in tuned.items() if k in known})
        source = str(path)
    return {"values": values, "source": source}


def load_utts(cfg: ReportConfig, sample_rate: int) -> list[Utt]:
    from kocall.audio import load_audio
    from kocall.datadir import load_data_dir

    utts: list[Utt] = []
    for set_name in cfg.sets:
        data = load_data_dir(Path(cfg.data) / set_name)
        ids = data.utt_ids[: cfg.max_utts] if cfg.max_utts > 0 else data.utt_ids
        for utt_id in ids:
            samples, sr = load_audio(data.wav[utt_id], utt_id, expected_sr=sample_rate, resample=True)
            utts.append(Utt(utt_id, set_name, samples, samples.size / sr, data.text[utt_id]))
    if not utts or sum(u.seconds for u in utts) <= 0:
        raise KocallError(f"report: no audio in sets {cfg.sets} of data dir '{cfg.data}'")
    return utts


def set_threads(n: int) -> None:
    import numba
    import torch

    torch.set_num_threads(n)
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


def attention_weights(model_dir: Path) -> dict[str, dict]:
    """{mode: the dev-tuned weights the decode stage wrote} for the attention modes it ran."""
    found = {}
    for mode in ATTENTION_MODES:
        path = model_dir.resolve().parent / f"decode_dev_{mode}" / "best_weights.json"
        if path.is_file():
            found[mode] = read_json(path)
    return found


def make_recognizer(model_dir: Path, device: str, cfg: ReportConfig, weights: dict) -> Recognizer:
    import torch

    from kocall.export import load_any_model_dir
    from kocall_kernels.ctc_decoder import DecoderConfig
    from kocall.features import model_fbank_config

    model, tokenizer, config = load_any_model_dir(model_dir, device)
    model.eval()
    fbank_cfg = model_fbank_config(model_dir)
    cmvn = read_json(model_dir / "cmvn.json")
    tables = None
    if cfg.lm:
        from kocall_kernels.ngram.arpa import tables_from_arpa

        tables = tables_from_arpa(cfg.lm, model_dir / "tokens.txt", progress=False)
    rec = Recognizer(model=model, tokenizer=tokenizer, fbank_cfg=fbank_cfg,
                     mean=torch.tensor(cmvn["mean"], device=device), std=torch.tensor(cmvn["std"], device=device),
                     device=device, tables=tables, decoder_cfg=DecoderConfig(**weights["values"]))
    tuned = attention_weights(model_dir) if tables is not None else {}
    if tuned:
        from kocall.joint_decode import JointConfig, ModeSettings, RescoreConfig, load_joint_model

        checkpoint = next((w.get("attention_checkpoint") for w in tuned.values() if w.get("attention_checkpoint")), None)
        rec.joint = load_joint_model(model, config, model_dir, checkpoint)
        fields_of = {"rescore": RescoreConfig, "joint": JointConfig}
        rec.mode_settings = {
            mode: ModeSettings("rescore" if mode == "rescore" else "joint", tokenizer, rec.decoder_cfg, tables,
                               **{mode: fields_of[mode](**{k: v for k, v in w.items()
                                                           if k in fields_of[mode].__dataclass_fields__})})
            for mode, w in tuned.items()}
    return rec


def time_pass(rec: Recognizer, utts: list[Utt], mode: str) -> tuple[float, dict[str, str]]:
    """RTF of one pass (after a warm-up) and the hypotheses."""
    import torch

    # Warm-up: one untimed pass over the same utterances. Besides numba compilation and the
    # allocator, torch/oneDNN build a primitive per new input length on first sight: warming
    # up on one utterance left the first timed pass 20x slower than the steady state (measured).
    for utt in utts:
        rec.recognize(utt.samples, mode)
    sync = torch.cuda.synchronize if rec.device == "cuda" else (lambda: None)
    hyps: dict[str, str] = {}
    sync()
    start = time.perf_counter()
    for utt in utts:
        hyps[f"{utt.set_name}/{utt.utt_id}"] = rec.recognize(utt.samples, mode)
    sync()
    elapsed = time.perf_counter() - start
    return elapsed / sum(u.seconds for u in utts), hyps


def rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB


def measure_model(model_dir: str, cfg: ReportConfig) -> dict[str, Any]:
    """Everything the report says about one model dir (run in a fresh process by default)."""
    import torch

    from kocall.export import SCALE_SUFFIX, dir_size_bytes, load_state_dict, read_config, stored_activations
    from kocall.scoring import score_texts

    path = Path(model_dir)
    baseline = rss_mb()
    config = read_config(path)
    quantized = config.get("quantized") or False
    weights = beam_weights(path, cfg)
    state = load_state_dict(path / "model.pt")
    result: dict[str, Any] = {
        "name": path.name, "path": str(model_dir), "quantized": quantized,
        "int8_activations": stored_activations(config, path) if quantized else None,
        "params": sum(t.numel() for k, t in state.items() if not k.endswith(SCALE_SUFFIX)),
        "size_mb": round(dir_size_bytes(path) / MB, 3), "beam_weights": weights,
        "crr": {}, "rtf": {}, "gpu_peak_mb": None,
    }
    del state
    rec = make_recognizer(path, "cpu", cfg, weights)
    modes = rec.modes
    utts = load_utts(cfg, rec.fbank_cfg.sample_rate)
    result["audio_seconds"] = round(sum(u.seconds for u in utts), 3)
    result["utts"] = {s: sum(u.set_name == s for u in utts) for s in cfg.sets}
    hyps_by_mode: dict[str, dict[str, str]] = {}
    for n in cfg.threads:
        set_threads(n)
        result["rtf"][f"cpu{n}"] = {}
        for mode in modes:
            rtf, hyps = time_pass(rec, utts, mode)
            result["rtf"][f"cpu{n}"][mode] = rtf
            hyps_by_mode.setdefault(mode, hyps)
    want_gpu = cfg.device == "cuda" and torch.cuda.is_available()
    if want_gpu and result["int8_activations"] in (None, "float"):   # dynamic int8 kernels are CPU-only
        gpu = make_recognizer(path, "cuda", cfg, weights)
        torch.cuda.reset_peak_memory_stats()
        result["rtf"]["cuda"] = {mode: time_pass(gpu, utts, mode)[0] for mode in modes if mode not in ATTENTION_MODES}
        result["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / MB, 1)
    for set_name in cfg.sets:
        refs = {f"{u.set_name}/{u.utt_id}": u.text for u in utts if u.set_name == set_name}
        result["crr"][set_name] = {mode: score_texts(refs, {k: hyps_by_mode[mode][k] for k in refs}).crr
                                   for mode in modes}
    peak = rss_mb()
    result["peak_rss_mb"] = round(peak, 1)
    result["peak_rss_delta_mb"] = round(peak - baseline, 1)
    return result


def _measure_in_child(args: tuple[str, ReportConfig]) -> dict[str, Any] | str:
    try:
        return measure_model(*args)
    except KocallError as err:  # crosses the process boundary as text, re-raised by the parent
        return f"error: {err.message}"


def measure_all(model_dirs: list[str], cfg: ReportConfig) -> list[dict[str, Any]]:
    if not cfg.isolate:
        return [measure_model(m, cfg) for m in model_dirs]
    results = []
    ctx = multiprocessing.get_context("spawn")
    for model_dir in model_dirs:
        with ctx.Pool(1) as pool:  # a fresh process per model: its peak memory is its own
            out = pool.apply(_measure_in_child, ((model_dir, cfg),))
        if isinstance(out, str):
            raise KocallError(out.removeprefix("error: "))
        results.append(out)
    return results


# ---------------------------------------------------------------------------- report


def host_info(device: str) -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "gpu": gpu}


def quantization_deltas(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """int8 minus float for each int8 model whose float twin is also in the report."""
    floats = [m for m in models if not m["quantized"]]
    deltas = []
    for q in (m for m in models if m["quantized"]):
        if not floats:
            break
        base = floats[0]
        deltas.append({
            "model": q["name"], "baseline": base["name"],
            "crr": {s: {mode: q["crr"][s][mode] - base["crr"][s][mode] for mode in base["crr"][s]}
                    for s in base["crr"] if s in q["crr"]},
            "size_mb": q["size_mb"] - base["size_mb"],
            "size_ratio": q["size_mb"] / base["size_mb"] if base["size_mb"] else None,
            "rtf_ratio": {dev: {mode: q["rtf"][dev][mode] / base["rtf"][dev][mode] for mode in base["rtf"][dev]
                                if base["rtf"][dev][mode] > 0}
                          for dev in base["rtf"] if dev in q["rtf"]},
        })
    return deltas


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def model_table(m: dict[str, Any], sets: list[str], devices: list[str]) -> list[str]:
    kind = "float32"
    if m["quantized"]:
        kind = {"dynamic": "int8 (dynamic, Linear + attention)", "float": "int8 weights, float activations",
                "dynamic-decoder": "int8 weights; dynamic int8 in the decoder, float activations elsewhere"
                }.get(m.get("int8_activations", "dynamic"), str(m.get("int8_activations")))
    lines = [f"### {m['name']} ({kind})", "",
             f"`{m['path']}` -- {m['params']:,} parameters, {_f(m['size_mb'])} MB on disk, "
             f"peak RSS {_f(m['peak_rss_mb'], 0)} MB (+{_f(m['peak_rss_delta_mb'], 0)} MB for model, LM and "
             f"decoding)" + (f", GPU peak {_f(m['gpu_peak_mb'], 0)} MB" if m.get("gpu_peak_mb") else "") + ".", "",
             "| measure | " + " | ".join(MODE_TITLES[mode] for mode in MODES) + " |",
             "|---|" + "---:|" * len(MODES)]
    for s in sets:
        lines.append(f"| CRR {s} ({m['utts'][s]} utts) | "
                     + " | ".join(_f(m["crr"][s].get(mode)) for mode in MODES) + " |")
    for dev in devices:
        row = m["rtf"].get(dev)
        lines.append(f"| RTF {_device_title(dev)} | "
                     + " | ".join(_f(row.get(mode) if row else None, 4) for mode in MODES) + " |")
    lines += ["", f"Beam+LM weights: {m['beam_weights']['values']} from {m['beam_weights']['source']}.", ""]
    return lines


def _device_title(dev: str) -> str:
    return "GPU" if dev == "cuda" else f"CPU x{dev.removeprefix('cpu')} thread" + ("s" if dev != "cpu1" else "")


def comparison_table(models: list[dict[str, Any]], deltas: list[dict[str, Any]], sets: list[str],
                     devices: list[str]) -> list[str]:
    head = (["model", "params", "size MB"] + [f"CRR {s} {MODE_TITLES[mode]}" for s in sets for mode in MODES]
            + [f"RTF {_device_title(d)} {MODE_TITLES[mode]}" for d in devices for mode in MODES] + ["peak RSS MB"])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for m in models:
        cells = [m["name"], f"{m['params']:,}", _f(m["size_mb"])]
        cells += [_f(m["crr"][s].get(mode)) for s in sets for mode in MODES]
        cells += [_f(m["rtf"].get(d, {}).get(mode), 4) for d in devices for mode in MODES]
        lines.append("| " + " | ".join(cells + [_f(m["peak_rss_mb"], 0)]) + " |")
    for d in deltas:
        cells = [f"{d['model']} - {d['baseline']}", "", f"{d['size_mb']:+.2f} (x{_f(d['size_ratio'])})"]
        cells += [_signed(d["crr"].get(s, {}).get(mode)) for s in sets for mode in MODES]
        cells += [("x" + _f(d["rtf_ratio"][dev][mode])) if mode in d["rtf_ratio"].get(dev, {}) else "n/a"
                  for dev in devices for mode in MODES]
        lines.append("| " + " | ".join(cells + [""]) + " |")
    return lines


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def render_markdown(report: dict[str, Any]) -> str:
    sets = report["sets"]
    devices = [d for d in ["cpu1", "cpu2", "cuda"] + [f"cpu{n}" for n in report["threads"]]
               if any(d in m["rtf"] for m in report["models"])]
    devices = list(dict.fromkeys(devices))
    host = report["host"]
    lines = ["# kocall report: recognition rate, size and speed", "",
             f"Data `{report['data']}`, sets {', '.join(sets)}"
             + (f" (first {report['max_utts']} utterances each)" if report["max_utts"] else "")
             + f"; LM `{report['lm'] or 'none'}`. Host: {host['processor']}, {host['cpu_count']} CPUs"
             + (f", GPU {host['gpu']}" if host["gpu"] else "") + f"; torch {host['torch']}.", "",
             "CRR = (1 - CER) x 100 with spaces removed (higher is better). RTF = processing seconds / "
             "audio seconds, features + network + search (lower is better). See docs/report.md.", "",
             "## Summary", ""]
    lines += comparison_table(report["models"], report["quantization_deltas"], sets, devices)
    lines += ["", "## Per model", ""]
    for m in report["models"]:
        lines += model_table(m, sets, devices)
    return "\n".join(lines).rstrip() + "\n"


def build_report(model_dirs: list[str], cfg: ReportConfig) -> dict[str, Any]:
    if not model_dirs:
        raise KocallError("report: give at least one --model")
    for model_dir in model_dirs:  # fail before minutes of measuring, naming the file
        from kocall.export import validate_model_dir

        validate_model_dir(model_dir)
    if cfg.lm and not Path(cfg.lm).is_file():
        raise KocallError(f"report: LM file '{cfg.lm}' is missing")
    models = measure_all(model_dirs, cfg)
    return {"data": cfg.data, "sets": cfg.sets, "lm": cfg.lm, "max_utts": cfg.max_utts,
            "threads": list(cfg.threads), "device": cfg.device, "host": host_info(cfg.device),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "models": models,
            "quantization_deltas": quantization_deltas(models)}


@click.command("report")
@click.option("--model", "models", multiple=True, required=True, help="model dir (repeat: float and int8)")
@click.option("--data", required=True, help="data root holding the test sets")
@click.option("--sets", required=True, help="comma-separated test set names, e.g. test,test_kspon")
@click.option("--lm", default=None, help="ARPA LM over the units (beam+LM rows need it)")
@click.option("--out-md", required=True, help="Markdown report to write")
@click.option("--out-json", required=True, help="JSON report to write")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda also measures the GPU RTF (float models)")
@click.option("--max-utts", type=bounded("max_utts"), default=0, show_default=True, help="per set; 0 = all")
@click.option("--threads", default="1,2", show_default=True, help="CPU thread counts to time")
@click.option("--beam", type=bounded("beam"), default=16, show_default=True, help="beam width of the LM decode")
@click.option("--lm-weight", type=bounded("lm_weight"), default=0.5, show_default=True, help="unless best_weights.json")
@click.option("--word-bonus", type=bounded("word_bonus"), default=0.0, show_default=True, help="unless best_weights.json")
@allow_pipes_option
def report_cmd(models: tuple[str, ...], data: str, sets: str, lm: str | None, out_md: str, out_json: str,
               device: str, max_utts: int, threads: str, beam: int, lm_weight: float, word_bonus: float) -> None:
    """CRR, model size, RTF and peak memory of each model dir, as Markdown and JSON."""
    from kocall.device import require_device

    require_device(device)
    if any(attention_weights(Path(m)) for m in models):   # before torch loads (see kocall.joint_decode)
        from kocall.joint_decode import quiet_openmp

        quiet_openmp()
    try:
        thread_counts = tuple(int(check_bound("threads", t, "--threads")) for t in threads.split(",") if t.strip())
    except ValueError:
        raise KocallError(f"report: --threads must be comma-separated integers, not '{threads}'") from None
    if not thread_counts or min(thread_counts) < 1:
        raise KocallError(f"report: --threads needs positive counts, not '{threads}'")
    set_names = [s for s in sets.split(",") if s.strip()]
    cfg = ReportConfig(data=data, sets=set_names, lm=lm, device=device, max_utts=max_utts, threads=thread_counts,
                       beam=beam, lm_weight=lm_weight, word_bonus=word_bonus)
    report = build_report(list(models), cfg)
    markdown = render_markdown(report)
    with atomic_write(out_json) as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    with atomic_write(out_md) as handle:
        handle.write(markdown)
    click.echo(f"wrote {out_md} and {out_json}", err=True)
