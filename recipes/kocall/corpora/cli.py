"""`kocall prep <format>`: corpus -> DATA/{train,dev,<test sets>}, DATA/test_sets, DATA/local/lm_text.txt.

Every subcommand takes the source, `--out DATA`, `--punct`, `--seed` and `--dev-fraction`
(used only where the corpus has no dev set: whole speakers are held out), except
`kocall prep shared-ko`, which makes its own split (kocall.corpora.shared_ko). Also
`kocall prep fix-data-dir DIR` (utils/fix_data_dir.sh).
"""
from __future__ import annotations

from pathlib import Path

import click

from kocall.corpora import read_lm_text, write_prepared
from kocall.corpora.splits import split_by_speaker
from kocall.datadir import Utterance
from kocall.errors import DataError
from kocall.fileio import check_output_dir
from kocall.options import bounded
from kocall.rxspec import allow_pipes_option
from kocall.text_norm import PUNCT_MODES


def common_options(func):
    """The options every `kocall prep` subcommand shares."""
    func = allow_pipes_option(func)
    func = click.option("--dev-fraction", type=bounded("dev_fraction"), default=0.1, show_default=True,
                        help="share of train (by speaker) held out for dev when the corpus has no dev set")(func)
    func = click.option("--seed", type=bounded("seed"), default=1, show_default=True, help="seed of the dev split")(func)
    func = click.option("--punct", type=click.Choice(PUNCT_MODES), default="strip", show_default=True,
                        help="strip: no punctuation; keep-final: sentence-final ?.! as output units")(func)
    func = click.option("--out", "out", required=True, type=click.Path(file_okay=False),
                        help="output data root (DATA)")(func)
    return func


def finish(out: str, sets: dict[str, list[Utterance]], test_sets: list[str], seed: int, dev_fraction: float,
           lm_lines: list[str] | None = None, sources: dict[str, str | None] | None = None) -> None:
    """Split off dev if needed, write everything, print one line per set.
    `sources` ({label: path}) are what was read: OUT may not be, contain or lie inside one."""
    check_output_dir(out, sources or {})
    sets = dict(sets)
    if "dev" not in sets:
        sets["train"], sets["dev"] = split_by_speaker(sets["train"], dev_fraction, seed)
    write_prepared(out, sets, test_sets, lm_lines)
    for name in ["train", "dev", *test_sets]:
        utts = sets[name]
        hours = sum(u.duration or 0.0 for u in utts) / 3600
        click.echo(f"{Path(out) / name}: {len(utts)} utterances, {len({u.speaker for u in utts})} speakers, "
                   f"{hours:.2f} h")


def _test_order(names: list[str]) -> list[str]:
    """'test' first, then the rest by name."""
    return sorted(names, key=lambda n: (n != "test", n))


@click.group("prep")
def prep_cmd() -> None:
    """Prepare Kaldi data dirs from a corpus."""


@prep_cmd.command("hackathon")
@click.argument("corpus_dir", type=click.Path(file_okay=False))
@click.option("--label-file", type=click.Path(dir_okay=False), default=None,
              help="character table [default: CORPUS_DIR/hackathon.labels]")
@common_options
def hackathon_cmd(corpus_dir: str, label_file: str | None, out: str, punct: str, seed: int,
                  dev_fraction: float) -> None:
    """Naver AI Hackathon 2019 layout (and the synthetic corpus)."""
    from kocall.corpora.hackathon import read_hackathon

    sets = read_hackathon(corpus_dir, label_file or None, punct)
    lm_file = Path(corpus_dir) / "lm_text.txt"
    lm_lines = read_lm_text(lm_file, punct) if lm_file.is_file() else []
    # dev_* splits (the synthetic dev_hotwords) are extra dev sets: prepared, never listed as test sets
    test_sets = [s for s in sets if s not in ("train", "dev") and not s.startswith("dev_")]
    finish(out, sets, _test_order(test_sets), seed, dev_fraction, lm_lines,
           {"corpus": corpus_dir, "--label-file": label_file})
    from kocall.hotwords import HOTWORDS_FILE, copy_hotwords

    for name in sets:  # a split's contextual-biasing list (the synthetic test_hotwords) goes with it
        copy_hotwords(Path(corpus_dir) / name / HOTWORDS_FILE, Path(out) / name)


def _json_sets(source: Path) -> dict[str, Path]:
    if source.is_file():
        return {"train": source}
    found: dict[str, Path] = {}
    for path in sorted(source.glob("*.json")):
        stem = path.stem.lower()
        for name in ("train", "dev", "test"):
            if stem.startswith(name):
                if name in found:
                    raise DataError(f"directory '{source}': both '{found[name].name}' and '{path.name}' "
                                    f"look like the {name} manifest; pass the file itself")
                found[name] = path
    if "train" not in found:
        raise DataError(f"directory '{source}': no train*.json manifest")
    return found


@prep_cmd.command("clovacall")
@click.argument("source", type=click.Path(exists=True))
@click.option("--wav-dir", type=click.Path(file_okay=False), default=None,
              help="folder the JSON 'wav' paths are relative to [default: the JSON's folder]")
@common_options
def clovacall_cmd(source: str, wav_dir: str | None, out: str, punct: str, seed: int, dev_fraction: float) -> None:
    """ClovaCall JSON: SOURCE is the train JSON, or a folder with train*.json (+ dev*.json, test*.json)."""
    from kocall.corpora.clovacall import read_clovacall

    sets = {name: read_clovacall(path, wav_dir, punct) for name, path in _json_sets(Path(source)).items()}
    finish(out, sets, [s for s in sets if s == "test"], seed, dev_fraction,
           sources={"corpus": source, "--wav-dir": wav_dir})


@prep_cmd.command("kspon")
@click.argument("corpus_dir", type=click.Path(file_okay=False))
@click.option("--side", type=click.Choice(["spelling", "pronunciation"]), default="spelling", show_default=True,
              help="which half of a (spelling)/(pronunciation) dual transcription to keep")
@common_options
def kspon_cmd(corpus_dir: str, side: str, out: str, punct: str, seed: int, dev_fraction: float) -> None:
    """KsponSpeech .pcm/.txt tree (eval_clean/, eval_other/ folders become test sets)."""
    from kocall.corpora.kspon import read_kspon

    sets = read_kspon(corpus_dir, side, punct)
    finish(out, sets, _test_order([s for s in sets if s != "train"]), seed, dev_fraction, sources={"corpus": corpus_dir})


@prep_cmd.command("tsv")
@click.argument("source", type=click.Path(exists=True))
@click.option("--test", "tests", multiple=True, metavar="NAME=TSV", help="a test set manifest (repeatable)")
@common_options
def tsv_cmd(source: str, tests: tuple[str, ...], out: str, punct: str, seed: int, dev_fraction: float) -> None:
    """TSV manifest(s): SOURCE is the train TSV or a folder with transcripts.tsv."""
    from kocall.corpora.tsv import read_tsv_manifest

    path = Path(source)
    sets = {"train": read_tsv_manifest(path / "transcripts.tsv" if path.is_dir() else path, punct)}
    test_names = []
    for spec in tests:
        name, sep, tsv = spec.partition("=")
        if not sep or not name or name in ("train", "dev") or name in sets:
            raise DataError(f"--test '{spec}': expected NAME=TSV with a new name other than train/dev")
        sets[name] = read_tsv_manifest(tsv, punct)
        test_names.append(name)
    finish(out, sets, test_names, seed, dev_fraction,
           sources={"manifest": source, **{f"--test {spec}": spec.partition("=")[2] for spec in tests}})


@prep_cmd.command("kaldi")
@click.argument("source", type=click.Path(file_okay=False, exists=True))
@common_options
def kaldi_cmd(source: str, out: str, punct: str, seed: int, dev_fraction: float) -> None:
    """Existing Kaldi data: SOURCE is a data root (train/, dev/, tests) or one data dir (-> train)."""
    from kocall.corpora.kaldi_dir import find_kaldi_sets, read_kaldi_dir

    check_output_dir(out, {"Kaldi data": source})  # before reading: the source must survive
    dirs, tests = find_kaldi_sets(source)
    sets = {name: read_kaldi_dir(path, punct) for name, path in dirs.items()}
    lm = Path(source) / "local" / "lm_text.txt"
    finish(out, sets, tests, seed, dev_fraction, read_lm_text(lm, punct) if lm.is_file() else [],
           {"Kaldi data": source})


@prep_cmd.command("shared-ko")
@click.argument("corpus_dir", type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="output data root (DATA)")
@click.option("--punct", type=click.Choice(PUNCT_MODES), default="strip", show_default=True,
              help="strip: no punctuation; keep-final: sentence-final ?.! as output units")
@click.option("--seed", type=bounded("seed"), default=1, show_default=True, help="seed of the speaker split and the channel")
@click.option("--nj", type=bounded("nj"), default=2, show_default=True, help="parallel jobs for the telephone channel")
@click.option("--cmd", default=None, help="run those jobs through run.pl, 'slurm.pl --mem 2G'... "
              "(default or '': processes of this machine)")
@click.option("--audio-dir", type=click.Path(file_okay=False), default=None,
              help="where the channelled WAVs go [default: corpora/shared_ko_tel in the repo]")
@click.option("--max-utts-per-corpus", type=bounded("max_utts"), default=0, show_default=True,
              help="keep at most N utterances of each corpus (round-robin over speakers; 0 = all), for quick tests")
@click.option("--dev-speakers", type=bounded("speakers"), default=4, show_default=True, help="emotiontts_ko speakers held out for dev")
@click.option("--test-speakers", type=bounded("speakers"), default=4, show_default=True,
              help="other emotiontts_ko speakers held out for test_heldout")
@allow_pipes_option
def shared_ko_cmd(corpus_dir: str, out: str, punct: str, seed: int, nj: int, cmd: str | None, audio_dir: str | None,
                  max_utts_per_corpus: int, dev_speakers: int, test_speakers: int) -> None:
    """Real Korean speech beside the repo (../shared; README "Real speech"): split, channel, LM text."""
    from kocall.corpora.shared_ko import TEST_SETS, prepare_shared_ko

    check_output_dir(out, {"corpus": corpus_dir, "--audio-dir": audio_dir})
    if audio_dir:
        check_output_dir(audio_dir, {"corpus": corpus_dir})
    prepared = prepare_shared_ko(corpus_dir, punct, seed, nj, audio_dir, max_utts_per_corpus,
                                 dev_speakers, test_speakers, cmd=cmd or None)
    finish(out, prepared.sets, list(TEST_SETS), seed, 0.1, prepared.lm_lines, {"corpus": corpus_dir})  # dev exists: no split there
    for line in prepared.summary():
        click.echo(line)


@prep_cmd.command("fix-data-dir")
@click.argument("data_dir", type=click.Path(file_okay=False, exists=True))
def fix_data_dir_cmd(data_dir: str) -> None:
    """Sort a data dir, keep utterances present in every table, rebuild spk2utt."""
    from kocall.corpora.kaldi_dir import fix_data_dir

    kept, removed = fix_data_dir(data_dir)
    click.echo(f"{data_dir}: kept {kept} utterances, removed {removed}")
