"""Generate the embedded default corpus: synthetic Korean call-centre telephone speech.

Output is the **Naver AI Hackathon 2019 "Speech" directory format**, so the default corpus
goes through the same preparation path (`--corpus hackathon`) as the real data:

    ROOT/hackathon.labels                  #id<TAB>char<TAB>freq; 0 = '_' (padding), ' ' (space)
                                           #   as its own entry, every character, <s>, </s>
    ROOT/<split>/<split>_data/data_list.csv  wav_000001.wav,wav_000001.label
    ROOT/<split>/<split>_data/wav_000001.wav 16 kHz 16-bit mono, 8 kHz band (telephone channel)
    ROOT/<split>/<split>_data/wav_000001.label  label indices of the transcript
    ROOT/<split>/<split>_data/utt2spk       wav_000001 spk007   (our extension: the voice)
    ROOT/<split>/<split>_label             wav_000001,574 268 662 ...
    ROOT/lm_text.txt                       extra grammar sentences for the LM (no dev/test sentence)
    ROOT/speakers.json, stats.json, stats.txt

for split in train, dev, test. Splits are disjoint in voices (whole espeak-ng variants are
held out) and in sentences. Transcripts keep their final ? or . as the hackathon's did.

A fourth split, `test_hotwords`, names new branches, menu items and products
(grammar.HOTWORD_TEMPLATES) that occur in no train, dev, test or LM sentence, spoken by the
test voices; `ROOT/test_hotwords/hotwords` lists those names and distractor names that never
occur (one phrase per line: a decoder's contextual-biasing list). It is planned after
everything else, so train, dev, test, the LM text and hackathon.labels are the same as
without it. A fifth, `dev_hotwords`, is its dev twin for tuning the hotword settings: other
new names (none of test_hotwords' names or distractors), spoken by the dev voices, with its
own list; planned last, so test_hotwords is the same as without it.

The number of utterances per split comes from a duration *estimate* per sentence and
speaker (syllables x seconds per syllable at the speaker's rate), so the split sizes are
known before any audio is made and the corpus is the same for a seed whatever --nj is;
stats.json reports the measured hours.
"""
from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from kocall.errors import KocallError
from kocall.fileio import atomic_dir, atomic_write
from kocall.synth.grammar import (DEV_HOTWORD_EXTRA_NAMES, HOTWORD_SLOT_NAMES, HOTWORD_TEMPLATES,
                                  SentenceGenerator, fill, hotword_slots)
from kocall.synth.voices import VARIANTS, Speaker, make_speakers, synthesize
from kocall.parallel import imap_progress
from kocall.telephone import ChannelConfig, energy_above, telephone_channel

SPLITS = ("train", "dev", "test")
HOTWORD_SPLIT = "test_hotwords"
HOTWORD_DEV_SPLIT = "dev_hotwords"
ALL_SPLITS = SPLITS + (HOTWORD_SPLIT, HOTWORD_DEV_SPLIT)
OUT_RATE = 16000
PAD, BOS, EOS = "_", "<s>", "</s>"
SECONDS_PER_SYLLABLE_AT_175 = 0.2   # measured on espeak-ng ko: 18 syllables take 3.8 s at -s 175


@dataclass
class SynthConfig:
    seed: int = 1
    train_hours: float = 2.0
    dev_minutes: float = 10.0
    test_minutes: float = 10.0
    lm_sentences: int = 30000
    dev_variants: int = 6               # whole espeak-ng variants held out for dev
    test_variants: int = 6              # ... and for test
    speakers_per_variant: int = 1
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    rate: tuple[int, int] = (140, 200)
    pitch: tuple[int, int] = (25, 75)
    energy_sample: int = 50             # files whose energy above 4 kHz is measured
    hotword_minutes: float = 8.0        # the test_hotwords split (0: none)
    hotword_names_per_kind: int = 12    # new names per kind (branch, menu, product) the split uses
    hotword_distractors_per_kind: int = 6  # ... and listed in its hotwords file but never said
    hotword_min_syllable_count: int = 10   # each syllable of a new name this often in train
    hotword_dev_minutes: float = 4.0    # the dev_hotwords split (0: none): tunes the hotword settings
    hotword_dev_names_per_kind: int = 6  # its names per kind, none of test_hotwords' (+ distractors)
    channel: dict = field(default_factory=dict)  # ChannelConfig overrides

    @classmethod
    def from_yaml(cls, path: str | Path | None, **overrides) -> "SynthConfig":
        values: dict = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise KocallError(f"synth config '{path}' is missing")
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise KocallError(f"synth config '{path}': unknown keys {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("rate", "pitch"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def channel_config(self) -> ChannelConfig:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.channel.items()}
        return ChannelConfig(out_rate=OUT_RATE, **values)


@dataclass(frozen=True)
class Job:
    index: int
    utt_id: str
    split: str
    text: str
    speaker: Speaker


@dataclass
class CorpusPlan:
    jobs: list[Job]
    speakers: dict[str, list[Speaker]]
    lm_text: list[str]
    hotwords: list[str] = field(default_factory=list)     # the test_hotwords split's list
    hotword_names: dict[str, list[str]] = field(default_factory=dict)  # slot kind -> names said
    dev_hotwords: list[str] = field(default_factory=list)  # the dev_hotwords split's list


# ----------------------------------------------------------------------------- planning

def assign_speakers(cfg: SynthConfig) -> dict[str, list[Speaker]]:
    """Speakers per split; dev and test each get whole variants that train never uses."""
    n_held = cfg.dev_variants + cfg.test_variants
    if len(cfg.variants) < n_held + 1:
        raise KocallError(f"synth: {len(cfg.variants)} voice variants cannot cover {cfg.dev_variants} dev + "
                          f"{cfg.test_variants} test variants and a training set")
    rng = random.Random(f"voices-{cfg.seed}")
    variants = list(cfg.variants)
    rng.shuffle(variants)
    groups = {"test": variants[:cfg.test_variants],
              "dev": variants[cfg.test_variants:n_held],
              "train": variants[n_held:]}
    speakers: dict[str, list[Speaker]] = {}
    index = 1
    for split in SPLITS:
        speakers[split] = make_speakers(groups[split], rng, cfg.speakers_per_variant, cfg.rate, cfg.pitch, index)
        index += len(speakers[split])
    return speakers


def estimate_seconds(text: str, speaker: Speaker) -> float:
    syllables = sum(1 for ch in text if "가" <= ch <= "힣")
    words = len(text.split())
    return 0.3 + syllables * SECONDS_PER_SYLLABLE_AT_175 * 175 / speaker.rate + words * speaker.word_gap * 0.01


def plan_split(split: str, seconds: float, speakers: list[Speaker], gen: SentenceGenerator,
               exclude: set[str], rng: random.Random) -> list[tuple[str, Speaker]]:
    """Unique sentences (not in `exclude`) with a speaker each, until `seconds` is reached."""
    plan: list[tuple[str, Speaker]] = []
    used: set[str] = set()
    total = 0.0
    misses = 0
    while total < seconds or not plan:
        text = gen.sentence()
        if text in used or text in exclude:
            misses += 1
            if misses > 100000:
                raise KocallError(f"synth: the grammar ran out of new sentences for {split}")
            continue
        speaker = rng.choice(speakers)
        plan.append((text, speaker))
        used.add(text)
        total += estimate_seconds(text, speaker)
    return plan


def _hangul(text: str) -> list[str]:
    return [ch for ch in text if "가" <= ch <= "힣"]


def pick_hotword_names(train: list[str], heard: list[str], cfg: SynthConfig,
                       rng: random.Random, taken: set[str] = frozenset(), per_kind: int | None = None,
                       distractors_per_kind: int | None = None) -> tuple[dict[str, list[str]], list[str]]:
    """({slot kind: names the split says}, distractors): new names whose syllables occur at
    least `hotword_min_syllable_count` times in `train`, that no sentence of `heard` holds
    (spaces ignored) and that are not in `taken` (another hotword split's names)."""
    per_kind = cfg.hotword_names_per_kind if per_kind is None else per_kind
    n_distract = cfg.hotword_distractors_per_kind if distractors_per_kind is None else distractors_per_kind
    counts = Counter(ch for text in train for ch in _hangul(text))
    heard_text = "\n".join("".join(text.split()) for text in heard)
    said: dict[str, list[str]] = {}
    distractors: list[str] = []
    for kind, names in HOTWORD_SLOT_NAMES.items():
        if taken:   # a second hotword split (dev_hotwords) may also draw on its own extra names
            names = names + DEV_HOTWORD_EXTRA_NAMES[kind]
        usable = [n for n in names if all(counts[ch] >= cfg.hotword_min_syllable_count for ch in _hangul(n))
                  and n not in heard_text and n not in taken]
        rng.shuffle(usable)
        said[kind] = usable[:per_kind]
        distractors += usable[per_kind:per_kind + n_distract]
        if not said[kind] and not taken:   # the dev twin makes do with the kinds it has names for
            raise KocallError(f"synth: no new {kind} name is covered by the training syllables")
    said = {kind: names for kind, names in said.items() if names}
    if not said:
        raise KocallError("synth: no new name left for the hotword dev split (a larger train set covers more)")
    return said, distractors


def plan_hotword_split(cfg: SynthConfig, plans: dict[str, list[tuple[str, Speaker]]], lm_text: list[str],
                       speakers: list[Speaker], split: str = HOTWORD_SPLIT, taken: set[str] = frozenset()
                       ) -> tuple[list[tuple[str, Speaker]], dict[str, list[str]], list[str]]:
    """A hotword split's sentences (`speakers`' voices), the names they say and its hotwords
    list: test_hotwords, or (split=dev_hotwords, `taken` = test_hotwords' names) its dev twin."""
    dev = split == HOTWORD_DEV_SPLIT
    rng = random.Random(f"hotwords-{cfg.seed}" if not dev else f"hotwords-{cfg.seed}-{split}")
    existing = [text for plan in plans.values() for text, _ in plan]
    names, distractors = pick_hotword_names(
        [t for t, _ in plans["train"]], existing + lm_text, cfg, rng, taken,
        cfg.hotword_dev_names_per_kind if dev else None, cfg.hotword_dev_names_per_kind // 2 if dev else None)
    slots = hotword_slots(names)
    templates = [t for t in HOTWORD_TEMPLATES   # only those whose new-name slots have names
                 if all(kind in names or "{" + kind not in t for kind in HOTWORD_SLOT_NAMES)]
    spk_rng = random.Random(f"spk-{cfg.seed}-{split}")
    plan: list[tuple[str, Speaker]] = []
    used: set[str] = set(existing)
    total = 0.0
    for _ in range(100000):
        if total >= (cfg.hotword_dev_minutes if dev else cfg.hotword_minutes) * 60:
            break
        text = fill(rng.choice(templates), rng, slots)
        if text in used:
            continue
        speaker = spk_rng.choice(speakers)
        plan.append((text, speaker))
        used.add(text)
        total += estimate_seconds(text, speaker)
    said_text = "\n".join("".join(text.split()) for text, _ in plan)
    distractors = [d for d in distractors if d not in said_text]  # never said, not even inside a longer name
    said = sorted({n for kind in names for n in names[kind] if n in said_text})
    hotwords = said + distractors
    rng.shuffle(hotwords)
    return plan, names, hotwords


def plan_corpus(cfg: SynthConfig) -> CorpusPlan:
    """All jobs (ids numbered across splits: train, dev, test, test_hotwords) and the LM sentences."""
    speakers = assign_speakers(cfg)
    targets = {"train": cfg.train_hours * 3600, "dev": cfg.dev_minutes * 60, "test": cfg.test_minutes * 60}
    plans: dict[str, list[tuple[str, Speaker]]] = {}
    held: set[str] = set()
    # Test first, then dev, then train: each later split excludes every earlier sentence.
    for order, split in enumerate(("test", "dev", "train")):
        gen = SentenceGenerator(cfg.seed * 1009 + order)
        rng = random.Random(f"spk-{cfg.seed}-{split}")
        plans[split] = plan_split(split, targets[split], speakers[split], gen, held, rng)
        if split != "train":
            held |= {text for text, _ in plans[split]}
    jobs: list[Job] = []
    for split in SPLITS:
        for text, speaker in plans[split]:
            index = len(jobs) + 1
            jobs.append(Job(index, f"wav_{index:06d}", split, text, speaker))
    lm_gen = SentenceGenerator(cfg.seed * 1009 + 7)
    lm_text = lm_gen.unique(cfg.lm_sentences, exclude=held) if cfg.lm_sentences else []
    result = CorpusPlan(jobs, speakers, lm_text)
    if cfg.hotword_minutes > 0:  # last, so that nothing above depends on it
        plan, result.hotword_names, result.hotwords = plan_hotword_split(cfg, plans, lm_text, speakers["test"])
        plans[HOTWORD_SPLIT] = plan
        for text, speaker in plan:
            index = len(jobs) + 1
            jobs.append(Job(index, f"wav_{index:06d}", HOTWORD_SPLIT, text, speaker))
    if cfg.hotword_minutes > 0 and cfg.hotword_dev_minutes > 0:   # after test_hotwords: it stays the same
        taken = set(result.hotwords) | {n for names in result.hotword_names.values() for n in names}
        plan, _, result.dev_hotwords = plan_hotword_split(cfg, plans, lm_text, speakers["dev"], HOTWORD_DEV_SPLIT,
                                                          taken)
        for text, speaker in plan:
            index = len(jobs) + 1
            jobs.append(Job(index, f"wav_{index:06d}", HOTWORD_DEV_SPLIT, text, speaker))
    return result


def build_labels(texts: list[str]) -> list[tuple[int, str, int]]:
    """(id, char, freq): 0 = '_' padding, characters by falling frequency (space included), <s>, </s>."""
    counts = Counter(ch for text in texts for ch in text)
    if PAD in counts:
        raise KocallError(f"synth: the padding symbol {PAD!r} occurs in a transcript")
    chars = sorted(counts, key=lambda ch: (-counts[ch], ch))
    rows = [(0, PAD, 0)] + [(i, ch, counts[ch]) for i, ch in enumerate(chars, 1)]
    rows += [(len(rows), BOS, 0), (len(rows) + 1, EOS, 0)]
    return rows


# ----------------------------------------------------------------------------- audio

_WORKER_STATE: dict = {}


def _init_worker(root: str, seed: int, channel: ChannelConfig, measure: frozenset[int]) -> None:
    _WORKER_STATE.update(root=Path(root), seed=seed, channel=channel, measure=measure)


def _render(job: Job) -> tuple[int, float, float | None]:
    """Synthesize, pass through the telephone channel, write the WAV; (index, seconds, energy>4k)."""
    import soundfile as sf

    state = _WORKER_STATE
    samples, rate = synthesize(job.text, job.speaker, job.utt_id)
    rng = np.random.default_rng([state["seed"], job.index])   # one stream per utterance: --nj-independent
    audio = telephone_channel(samples, rate, rng, state["channel"])
    pcm = np.clip(np.round(audio), -32768, 32767).astype(np.int16)
    path = state["root"] / job.split / f"{job.split}_data" / f"{job.utt_id}.wav"
    # Plain write: the whole corpus directory is built in a temp dir and renamed (atomic).
    sf.write(path, pcm, OUT_RATE, subtype="PCM_16", format="WAV")
    energy = energy_above(pcm.astype(np.float32), OUT_RATE) if job.index in state["measure"] else None
    return job.index, pcm.size / OUT_RATE, energy


def render_all(jobs: list[Job], root: Path, cfg: SynthConfig, nj: int,
               part: list[Job] | None = None) -> tuple[dict[int, float], dict[int, float]]:
    """Render every job (or only `part` of them) into root; (index -> seconds, index -> energy
    above 4 kHz of the measured files). The measured files are drawn from all jobs."""
    channel = cfg.channel_config()
    pick = random.Random(f"energy-{cfg.seed}")
    measure = frozenset(job.index for job in pick.sample(jobs, min(cfg.energy_sample, len(jobs))))
    durations: dict[int, float] = {}
    energies: dict[int, float] = {}
    init_args = (str(root), cfg.seed, channel, measure)
    for index, seconds, energy in imap_progress(_render, jobs if part is None else part, nj, "synth",
                                                _init_worker, init_args):
        durations[index] = seconds
        if energy is not None:
            energies[index] = energy
    return durations, energies


# ----------------------------------------------------------------------------- as --nj jobs (--cmd)
def _job_result(tmp: Path, job: int) -> Path:
    return tmp / f".render.{job}.json"


def render_job(tmp: Path, cfg: SynthConfig, nj: int, job: int) -> int:
    """Job `job` of `nj`: render its contiguous part of the corpus into the staging dir `tmp`
    (what generate_corpus(cmd=...) dispatches); writes .render.<job>.json last. Returns the count."""
    from kocall.jobs import split_contiguous

    jobs = plan_corpus(cfg).jobs
    parts = split_contiguous(jobs, nj)
    if not 1 <= job <= len(parts):
        raise KocallError(f"synth --job {job}: the corpus splits into {len(parts)} jobs with --nj {nj}")
    durations, energies = render_all(jobs, tmp, cfg, 1, parts[job - 1])
    with atomic_write(_job_result(tmp, job)) as handle:
        json.dump({"durations": durations, "energies": energies}, handle)
    return len(durations)


def _render_dispatched(jobs: list[Job], tmp: Path, root: Path, cfg: SynthConfig, nj: int,
                       cmd: str) -> tuple[dict[int, float], dict[int, float]]:
    """The rendering as jobs through `cmd`; logs in the staging dir's log/render.<n>.log, so they
    become ROOT/log/ with the corpus and nothing is written outside ROOT (a failed job's last
    line is in the error that a failure raises before the staging dir is removed)."""
    import sys

    from kocall.jobs import dispatch, split_contiguous

    n = len(split_contiguous(jobs, nj))
    conf = tmp / ".synth.yaml"   # the jobs plan the same corpus from the same config
    conf.write_text(yaml.safe_dump(dataclasses.asdict(cfg), allow_unicode=True), encoding="utf-8")
    log = tmp / "log" / "render.JOB.log"
    dispatch(cmd, n, log, [sys.executable, "-m", "kocall.cli", "synth", "--config", str(conf), "--nj", str(n),
                           "--job", "JOB", str(tmp)], f"synth {root}")
    durations: dict[int, float] = {}
    energies: dict[int, float] = {}
    for job in range(1, n + 1):
        result = json.loads(_job_result(tmp, job).read_text(encoding="utf-8"))
        durations.update({int(k): v for k, v in result["durations"].items()})
        energies.update({int(k): v for k, v in result["energies"].items()})
        _job_result(tmp, job).unlink()
    conf.unlink()
    return durations, energies


# ----------------------------------------------------------------------------- writing

def _write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_hackathon_layout(root: Path, jobs: list[Job], labels: list[tuple[int, str, int]]) -> None:
    """Everything but the audio: labels file, data_list.csv, .label files, utt2spk, <split>_label."""
    char_to_id = {ch: i for i, ch, _ in labels}
    _write_text(root / "hackathon.labels", ["#id\tchar\tfreq"] + [f"{i}\t{ch}\t{freq}" for i, ch, freq in labels])
    for split in ALL_SPLITS:
        split_jobs = [job for job in jobs if job.split == split]
        if not split_jobs:
            continue
        data_dir = root / split / f"{split}_data"
        data_dir.mkdir(parents=True, exist_ok=True)
        encoded = {job.utt_id: " ".join(str(char_to_id[ch]) for ch in job.text) for job in split_jobs}
        _write_text(data_dir / "data_list.csv", [f"{j.utt_id}.wav,{j.utt_id}.label" for j in split_jobs])
        _write_text(data_dir / "utt2spk", [f"{j.utt_id} {j.speaker.speaker_id}" for j in split_jobs])
        _write_text(root / split / f"{split}_label", [f"{j.utt_id},{encoded[j.utt_id]}" for j in split_jobs])
        for job in split_jobs:
            (data_dir / f"{job.utt_id}.label").write_text(encoded[job.utt_id] + "\n", encoding="utf-8")


def corpus_stats(jobs: list[Job], durations: dict[int, float], energies: list[float],
                 speakers: dict[str, list[Speaker]], lm_text: list[str], cfg: SynthConfig,
                 seconds: float, nj: int, hotwords: list[str] | None = None) -> dict:
    per_split: dict[str, dict] = {}
    voices: dict[str, set[str]] = {}
    variants: dict[str, set[str]] = {}
    sentences: dict[str, set[str]] = {}
    for split in ALL_SPLITS:
        split_jobs = [job for job in jobs if job.split == split]
        if not split_jobs:
            continue
        voices[split] = {job.speaker.speaker_id for job in split_jobs}
        variants[split] = {job.speaker.variant for job in split_jobs}
        sentences[split] = {job.text for job in split_jobs}
        total = sum(durations[job.index] for job in split_jobs)
        per_split[split] = {
            "hours": round(total / 3600, 4), "utterances": len(split_jobs), "voices": len(voices[split]),
            "variants": len(variants[split]), "unique_sentences": len(sentences[split]),
            "mean_seconds": round(total / max(1, len(split_jobs)), 3),
        }
    overlap = {}
    for a, b in (("train", "test"), ("train", "dev"), ("dev", "test")):
        overlap[f"{a}_{b}"] = {"voices": len(voices[a] & voices[b]), "variants": len(variants[a] & variants[b]),
                               "sentences": len(sentences[a] & sentences[b])}
    held = sentences["dev"] | sentences["test"]
    stats_hotwords = {}
    if hotwords:
        said = "\n".join("".join(t.split()) for t in sentences[HOTWORD_SPLIT])
        elsewhere = "\n".join("".join(t.split()) for t in [*sentences["train"], *held, *lm_text])
        stats_hotwords = {"phrases": len(hotwords), "said": sum(1 for h in hotwords if h in said),
                          "in_train_dev_test_or_lm": sum(1 for h in hotwords if h in elsewhere)}
    return {
        "seed": cfg.seed, "splits": per_split, "overlap": overlap,
        **({"hotwords": stats_hotwords} if stats_hotwords else {}),
        "lm_text": {"sentences": len(lm_text), "dev_test_overlap": len(held & set(lm_text))},
        "energy_above_4khz": {"files": len(energies), "mean": float(np.mean(energies)) if energies else None,
                              "max": float(np.max(energies)) if energies else None},
        "generation": {"seconds": round(seconds, 1), "nj": nj},
        "speakers": {split: [s.speaker_id for s in speakers[split]] for split in SPLITS},
    }


def stats_text(stats: dict) -> str:
    lines = ["Synthetic Korean call-centre telephone corpus (kocall synth)", f"seed {stats['seed']}", ""]
    lines.append(f"{'split':<6} {'hours':>7} {'utts':>6} {'voices':>6} {'variants':>8} {'sentences':>9} {'mean s':>7}")
    for split, s in stats["splits"].items():
        lines.append(f"{split:<6} {s['hours']:>7.3f} {s['utterances']:>6} {s['voices']:>6} {s['variants']:>8} "
                     f"{s['unique_sentences']:>9} {s['mean_seconds']:>7.2f}")
    lines.append("")
    for pair, o in stats["overlap"].items():
        lines.append(f"overlap {pair}: voices {o['voices']}, variants {o['variants']}, sentences {o['sentences']}")
    if "hotwords" in stats:
        h = stats["hotwords"]
        lines.append(f"{HOTWORD_SPLIT}/hotwords: {h['phrases']} phrases, {h['said']} said in the split, "
                     f"{h['in_train_dev_test_or_lm']} in a train/dev/test/LM sentence")
    lm = stats["lm_text"]
    lines.append(f"lm_text.txt: {lm['sentences']} sentences ({lm['dev_test_overlap']} shared with dev/test)")
    e = stats["energy_above_4khz"]
    if e["files"]:
        lines.append(f"energy above 4 kHz over {e['files']} files: mean {e['mean']:.2e}, max {e['max']:.2e}")
    g = stats["generation"]
    lines.append(f"generated in {g['seconds']} s with nj={g['nj']}")
    return "\n".join(lines) + "\n"


def generate_corpus(root: str | Path, cfg: SynthConfig, nj: int = 1, cmd: str | None = None) -> dict:
    """Build the whole corpus in a temp dir and rename it to `root`; returns the stats.
    cmd None: rendered by nj processes here; else as nj jobs through cmd (run.pl, slurm.pl...),
    the same audio either way."""
    start = time.perf_counter()
    plan = plan_corpus(cfg)
    jobs, speakers, lm_text = plan.jobs, plan.speakers, plan.lm_text
    # The labels come from the original splits only (the hotword split adds no character:
    # its names are spelt with training syllables), so hackathon.labels does not change.
    labels = build_labels([job.text for job in jobs if job.split in SPLITS])
    known = {ch for _, ch, _ in labels}
    for job in jobs:
        if not set(job.text) <= known:
            raise KocallError(f"synth: {job.utt_id} ({job.split}) holds characters no original split has")
    with atomic_dir(root) as tmp:
        write_hackathon_layout(tmp, jobs, labels)
        _write_text(tmp / "lm_text.txt", lm_text)
        if plan.hotwords:
            _write_text(tmp / HOTWORD_SPLIT / "hotwords", plan.hotwords)
        if plan.dev_hotwords:
            _write_text(tmp / HOTWORD_DEV_SPLIT / "hotwords", plan.dev_hotwords)
        if cmd is None:
            durations, energies = render_all(jobs, tmp, cfg, nj)
        else:
            durations, energies = _render_dispatched(jobs, tmp, Path(root), cfg, nj, cmd)
        (tmp / "speakers.json").write_text(json.dumps(
            {s.speaker_id: {**s.to_dict(), "split": split} for split in SPLITS for s in speakers[split]},
            ensure_ascii=False, indent=1), encoding="utf-8")
        stats = corpus_stats(jobs, durations, [energies[i] for i in sorted(energies)], speakers, lm_text, cfg, time.perf_counter() - start, nj,
                             plan.hotwords)
        (tmp / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=1), encoding="utf-8")
        (tmp / "stats.txt").write_text(stats_text(stats), encoding="utf-8")
    return stats
