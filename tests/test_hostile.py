"""Hostile and careless input, second round: each test covers one class of defect through the
shared mechanism that fixes it (the job backends, the output guard, the input hash, the numeric
option bounds, the trainer's loss check, the CLI's one-line errors, stage temp names), and
would fail without that fix."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kocall.errors import DataError, KocallError
from tests.test_reliability import one_line_error, run_kocall

REPO = Path(__file__).resolve().parents[1]
RUN_PL, SLURM_PL = str(REPO / "utils" / "run.pl"), str(REPO / "utils" / "slurm.pl")
HOSTILE = "a b $(touch {m}) `touch {m}` $HOME;touch {m}"


# ------------------------------------------------------------------ 1. the job backends
def test_run_pl_quotes_each_word_once_and_substitutes_only_the_index_name(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    words = [HOSTILE.format(m=marker), "/x/MYJOBS/data", "eval_JOB", "feats.JOB.ark", "JOB", "split4/JOB/text"]
    proc = subprocess.run([RUN_PL, "JOB=1:2", "log/p.JOB.log", sys.executable, "-c",
                           "import sys; print(repr(sys.argv[1:]))", *words], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    for job in (1, 2):
        printed = (tmp_path / "log" / f"p.{job}.log").read_text().splitlines()[3]
        assert printed == repr([HOSTILE.format(m=marker), "/x/MYJOBS/data", "eval_JOB", f"feats.{job}.ark", str(job),
                                f"split4/{job}/text"])
    # A word that is exactly a shell operator stays one (Kaldi's `\|`); inside a word it is text.
    proc = subprocess.run([RUN_PL, "l.log", "echo", "a", "|", "tr", "a", "b"], cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "l.log").read_text().splitlines()[3] == "b"
    proc = subprocess.run([RUN_PL, "m.log", "echo", "a|tr", "a", "b"], cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "m.log").read_text().splitlines()[3] == "a|tr a b"


@pytest.mark.parametrize("args, message", [
    (["--max-job-run", "1", "JOB=1:2", "l.JOB.log", "true"], "unknown option --max-job-run"),
    (["JOB=1:x", "l.JOB.log", "true"], "bad job range 'JOB=1:x'"),
    (["JOB=3:2", "l.JOB.log", "true"], "bad job range 'JOB=3:2'"),
    (["JOB=1:1000000", "l.JOB.log", "true"], "more than 10000 jobs"),
    (["--num-threads", "0", "JOB=1:2", "l.JOB.log", "true"], "--num-threads takes a whole number from 1"),
    (["--num-threads", "1e9", "l.log", "true"], "--num-threads takes a whole number from 1"),
])
def test_run_pl_refuses_bad_usage_in_one_line_and_runs_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([RUN_PL, *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not list(tmp_path.iterdir())   # no log named after the bad range, no job ran


def test_slurm_pl_refuses_an_option_its_config_does_not_map(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("command sbatch --export=ALL\noption mem=* --mem=$0\n")
    proc = subprocess.run([SLURM_PL, "--config", str(conf), "--max-job-run", "1", "JOB=1:2", "l.JOB.log", "true"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "--max-job-run 1: no 'option max_job_run=...' line" in proc.stderr, proc.stderr


def test_stage_jobs_on_a_hostile_data_dir_run_nothing_and_rewrite_no_path(tmp_path: Path) -> None:
    """make-feats through run.pl on a data dir whose path holds shell syntax and JOB."""
    from kocall.features import make_feats
    from tests.test_features import CONF, make_dir

    marker = tmp_path / "PWNED"
    root = tmp_path / HOSTILE.format(m=marker) / "JOB" / "MYJOBS"
    data = make_dir(root)
    make_feats(data, CONF, nj=2, show_progress=False, cmd="run.pl")
    assert not marker.exists()
    assert (data / "feats.scp").is_file() and sorted(p.name for p in (data / "log").iterdir()) == \
        ["make_fbank.1.log", "make_fbank.2.log"]
    assert sorted(p.name for p in root.parent.iterdir()) == ["MYJOBS"]   # no MY1S, no 1/ beside JOB/
    assert sorted(p.name for p in root.parent.parent.iterdir()) == ["JOB"]


@pytest.mark.parametrize("cmd, message", [("'run.pl", "cannot be split into words"),
                                          ("run.pl --max-job-run 1", "unknown option --max-job-run"),
                                          ("run.pl --num-threads 0", "--num-threads takes a whole number")])
def test_a_bad_cmd_is_one_line_before_any_job(tmp_path: Path, cmd: str, message: str) -> None:
    from kocall.features import make_feats
    from tests.test_features import CONF, make_dir

    data = make_dir(tmp_path)
    with pytest.raises(KocallError) as err:
        make_feats(data, CONF, nj=2, show_progress=False, cmd=cmd)
    assert message in err.value.format_message() and "\n" not in err.value.format_message()
    assert not (data / "feats.scp").exists() and not (data / "log").exists()


# ------------------------------------------------------------------ 2. data loss: the output guard
def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_folder_kocall_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    from kocall.fileio import OUTPUT_MARK, atomic_dir, staged_dirs

    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(DataError, match="photos' is a folder kocall did not write.*holiday.jpg"):
        with atomic_dir(mine) as tmp:
            (tmp / "out.txt").write_text("x")
    (tmp_path / "a_file").write_text("keep")
    with pytest.raises(DataError, match="a_file' exists and is not a folder kocall wrote"):
        with atomic_dir(tmp_path / "a_file"):
            pass
    # staged_dirs: one refused set, none replaced
    with pytest.raises(DataError, match="photos"):
        with staged_dirs(tmp_path) as staging:
            (staging / "photos").mkdir()
            (staging / "train").mkdir()
    assert not (tmp_path / "train").exists()
    assert _snapshot(tmp_path) == {"photos/holiday.jpg": b"jpeg", "a_file": b"keep"}
    # What kocall wrote (it holds the mark) it replaces as a whole; an empty folder is fine too.
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "built", tmp_path / "built", tmp_path / "empty"):
        with atomic_dir(target) as tmp:
            (tmp / "out.txt").write_text(str(target))
        assert (target / OUTPUT_MARK).is_file() and (target / "out.txt").read_text() == str(target)


def test_export_and_lang_refuse_an_unrelated_folder(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("years of work")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.pt").write_bytes(b"weights")
    train = tmp_path / "train"
    train.mkdir()
    (train / "text").write_text("u1 가나\n")
    before = _snapshot(tmp_path)
    one_line_error(run_kocall("export", "--model", str(model), "--out", str(busy)), str(busy), "did not write")
    one_line_error(run_kocall("lang", str(train), str(busy)), str(busy), "did not write")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("outputs", [["--json-out", "HW"], ["--summary-out", "HW"], ["--align", "HW"],
                                     ["--json-out", "A", "--summary-out", "A"]])
def test_score_refuses_an_output_that_is_an_input_or_another_output(tmp_path: Path, outputs: list[str]) -> None:
    (tmp_path / "ref").write_text("u1 가나\n")
    (tmp_path / "hyp").write_text("u1 가나\n")
    (tmp_path / "HW").write_text("가나\n")
    args = [str(tmp_path / o) if o in ("HW", "A") else o for o in outputs]
    before = _snapshot(tmp_path)
    line = one_line_error(run_kocall("score", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp"),
                                     "--hotwords", str(tmp_path / "HW"), *args))
    assert line.count(str(tmp_path)) >= 2, line   # both paths named
    assert _snapshot(tmp_path) == before


def test_score_checks_the_hotword_list_before_writing(tmp_path: Path) -> None:
    (tmp_path / "ref").write_text("u1 가나\n")
    (tmp_path / "hw").write_text("ㅋㅋ가\n")
    one_line_error(run_kocall("score", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "ref"), "--hotwords",
                              str(tmp_path / "hw"), "--json-out", str(tmp_path / "out.json")), "ㅋ")
    assert not (tmp_path / "out.json").exists()


def test_decode_refuses_out_equal_to_the_hotword_list(tmp_path: Path) -> None:
    (tmp_path / "hw").write_text("가나\n")
    (tmp_path / "m").mkdir()
    for option in ("--out", "--nbest-out"):
        one_line_error(run_kocall("decode", "--model", str(tmp_path / "m"), "--hotwords", str(tmp_path / "hw"),
                                  option, str(tmp_path / "hw"), "x.wav"), "--hotwords", str(tmp_path / "hw"))
    assert (tmp_path / "hw").read_text() == "가나\n"
    os.link(tmp_path / "hw", tmp_path / "hard_link")   # one file under another name
    one_line_error(run_kocall("decode", "--model", str(tmp_path / "m"), "--hotwords", str(tmp_path / "hw"),
                              "--out", str(tmp_path / "hard_link"), "x.wav"), "--hotwords")


# ------------------------------------------------------------------ 3/4. bounded numbers, hotword lists
@pytest.mark.parametrize("args, option", [
    (["decode", "--beam", "100000"], "--beam"), (["decode", "--lm-weight", "nan"], "--lm-weight"),
    (["decode", "--word-bonus", "nan"], "--word-bonus"), (["decode", "--max-seconds", "nan"], "--max-seconds"),
    (["decode", "--hotword-weight", "1e300"], "--hotword-weight"), (["decode", "--hotword-weight", "1e308"], "--hotword-weight"),
    (["decode", "--lm-weight", "inf"], "--lm-weight"), (["decode", "--batch-size", "9" * 5000], "--batch-size"),
    (["make-feats", "--nj", "1000000000"], "--nj"), (["make-feats", "--nj", "0"], "--nj"),
    (["train", "--threads", "0"], "--threads"), (["train", "--max-minutes", "nan"], "--max-minutes"),
    (["report", "--beam", "0"], "--beam"), (["synth", "--hours", "-1"], "--hours"),
    (["prep", "shared-ko", "--nj", "99999"], "--nj"),
])
def test_every_numeric_option_is_finite_and_bounded(args: list[str], option: str) -> None:
    result = run_kocall(*args)
    assert result.exit_code == 2, result.output
    line = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(line) == 1 and option in line[0] and " from " in line[0], result.output


def test_decode_stage_refuses_bad_nj_and_config_numbers_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", "steps/decode.sh", "--nj", "0", "a", "b", "c", "d"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and "--nj" in proc.stderr, proc.stderr
    from kocall.stage_decode import load_decode_conf

    conf = tmp_path / "decode.yaml"
    for body, key in (("beam: 100000\n", "beam"), ("hotword_weight: .nan\n", "hotword_weight"), ("", "grid.lm_weight")):
        conf.write_text(body + "grid:\n  lm_weight: [0.5, .inf]\n  word_bonus: [0.0]\n")
        with pytest.raises(KocallError, match=f"{conf}': {key} must be"):
            load_decode_conf(conf)


@pytest.mark.parametrize("text, message", [("ㅋㅋ점\n", "would be read as '점'"), ("😀명동\n", "drops 😀"),
                                           ("명동점 :1e300\n", "at most 100"), ("명동점 :nan\n", "not nan")])
def test_hotword_lists_that_would_mean_another_phrase_or_weight_are_refused(tmp_path: Path, text: str,
                                                                             message: str) -> None:
    from kocall.hotwords import read_hotwords

    (tmp_path / "hw").write_text(text)
    with pytest.raises(DataError, match=message):
        read_hotwords(tmp_path / "hw")
    with pytest.raises(DataError, match="is a folder"):
        read_hotwords(tmp_path)
    (tmp_path / "ok").write_text("3번 출구\nABC마트!\n")
    assert [h.phrase for h in read_hotwords(tmp_path / "ok")] == ["삼 번 출구", "ABC마트"]


# ------------------------------------------------------------------ 3. hangs and memory
def test_stage_hash_names_and_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "text").write_text("u1 가\n")
    os.mkfifo(corpus / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "root").symlink_to("/")
    (tmp_path / "mem").symlink_to("/proc/self/mem")
    cases = [(corpus, "'" + str(corpus / "fifo") + "' is a FIFO"), (tmp_path / "zero", "a device or socket"),
             (tmp_path / "root", "the root folder"), (tmp_path / "mem", "a system pseudo file")]
    for path, message in cases:   # each would block or run for ever without the check
        proc = subprocess.run([sys.executable, "-m", "kocall.cli", "stamp", "hash", str(path)], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 1 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    (corpus / "fifo").unlink()
    (corpus / "dirlink").symlink_to("/")   # a folder symlink inside a corpus is not followed
    proc = subprocess.run([sys.executable, "-m", "kocall.cli", "stamp", "hash", str(corpus)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("change, message", [
    ({"n_audio_head": 0}, "outside 1.."), ({"n_audio_state": 10**6}, "outside 1.."),
    ({"n_audio_layer": 200}, r"encoder tensor\(s\) missing"), ({"n_audio_head": 5}, "not divisible"),
    ({"nan": True}, "NaN or infinite"),
])
def test_whisper_checkpoint_dims_and_values_are_checked_before_any_model_is_built(tmp_path: Path, change: dict,
                                                                                  message: str) -> None:
    import torch

    from kocall.whisper_ctc.checkpoint import load_encoder_checkpoint
    from tests.test_whisper_ctc import TINY_DIMS, tiny_openai_checkpoint

    path = tmp_path / "tiny.pt"
    state = tiny_openai_checkpoint(path)
    dims = dict(TINY_DIMS)
    if change.pop("nan", False):
        state["encoder.blocks.1.mlp.0.weight"][0, 0] = float("nan")
    dims.update(change)
    torch.save({"dims": dims, "model_state_dict": state}, path)
    with pytest.raises(KocallError, match=message) as err:
        load_encoder_checkpoint(path)
    assert str(path) in err.value.format_message()


def _tiny_training(tmp_path: Path, lr: float = 4e-3):
    from kocall.trainer import RunOptions
    from tests.test_train import TEXTS, make_data_dir, make_lang, write_conf

    train, lang = make_data_dir(tmp_path, TEXTS, seed=0), make_lang(tmp_path)
    conf = write_conf(tmp_path / "c.yaml", optim={"lr": lr, "weight_decay": 0.0, "grad_clip": 5.0},
                      training={"epochs": 2, "checkpoint_every": 1000, "avg": 1, "log_every": 1})
    return train, RunOptions(model_conf=str(conf), train_dir=str(train), dev_dir=str(train), lang_dir=str(lang),
                             exp_dir=str(tmp_path / "exp"), seed=3, progress=False)


def test_a_non_finite_loss_stops_training_in_one_line_and_writes_no_final(tmp_path: Path) -> None:
    """A diverging run (learning rate 1e30) stands for any source of NaN (weights, a cache)."""
    from kocall.trainer import run_training
    from tests.test_train import CharTokenizer

    _, opts = _tiny_training(tmp_path, lr=1e30)
    with pytest.raises(KocallError, match="training stopped: the (training|dev) loss .*is not finite") as err:
        run_training(opts, tokenizer=CharTokenizer.from_lang_dir(Path(opts.lang_dir)))
    assert "\n" not in err.value.format_message()
    assert not (tmp_path / "exp" / "final").exists()


def test_an_utterance_over_the_length_limit_is_named_before_training(tmp_path: Path) -> None:
    from kocall.trainer import MAX_TRAIN_SECONDS, run_training
    from tests.test_train import CharTokenizer

    train, opts = _tiny_training(tmp_path)
    rows = (train / "utt2num_frames").read_text().splitlines()
    rows[4] = f"utt004 {int(MAX_TRAIN_SECONDS * 100) + 1}"   # what a 1 h recording would be, in small
    (train / "utt2num_frames").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=f"utterance 'utt004' .*over the {MAX_TRAIN_SECONDS:g} s"):
        run_training(opts, tokenizer=CharTokenizer.from_lang_dir(Path(opts.lang_dir)))
    assert not (tmp_path / "exp" / "final").exists()


def test_a_cache_file_with_changed_bytes_is_rebuilt_not_trained_on(tmp_path: Path, caplog) -> None:
    import torch

    from kocall.dataset import SpeechDataset, UttEntry, build_hidden_cache
    from kocall.whisper_ctc.model import WhisperCTC, WhisperCTCConfig
    from tests.test_train import N_MELS, TEXTS, make_data_dir
    from tests.test_whisper_ctc import TINY_DIMS

    train = make_data_dir(tmp_path, TEXTS[:3], seed=0)
    frames = dict(line.split() for line in (train / "utt2num_frames").read_text().splitlines())
    entries = [UttEntry(u, s, int(frames[u]), [], "") for u, s in
               (line.split(" ", 1) for line in (train / "feats.scp").read_text().splitlines())]
    torch.manual_seed(0)
    model = WhisperCTC(WhisperCTCConfig(vocab_size=5, **dict(TINY_DIMS, n_mels=N_MELS)))

    def cache() -> list[torch.Tensor]:
        source = SpeechDataset(entries, None, seed=1)
        return build_hidden_cache(source, 1, tmp_path / "cache" / "train", model, 1, torch.device("cpu"), seed=1)[0]

    clean = cache()
    (path,) = (tmp_path / "cache").iterdir()
    data = bytearray(path.read_bytes())
    data[-2000] ^= 0xFF   # a flipped byte inside the tensor data: torch.load still reads it
    path.write_bytes(bytes(data))
    assert all(torch.equal(a, b) for a, b in zip(cache(), clean))
    assert "does not match its checksum" in caplog.text and path.read_bytes() != bytes(data)
    path.write_bytes(path.read_bytes()[:1000])   # truncated
    assert all(torch.equal(a, b) for a, b in zip(cache(), clean))
    assert "cannot be read" in caplog.text


# ------------------------------------------------------------------ 5. one line, not a traceback
def _in_mount_namespace(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `script` (bash) in a private mount namespace: ro/ a read-only tmpfs, full/ an 8 kB one."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -rm (a private mount namespace) is not available here")
    (cwd / "ro").mkdir()
    (cwd / "full").mkdir()
    setup = "mount -t tmpfs -o size=8k tmpfs full && mount -t tmpfs -o size=1m tmpfs ro && "
    return subprocess.run(["unshare", "-rm", "bash", "-c", setup + script], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "KOCALL": f"{sys.executable} -m kocall.cli"}, timeout=300)


def test_read_only_and_full_filesystems_are_one_line_naming_the_output(tmp_path: Path) -> None:
    from tests.test_features import make_dir

    (tmp_path / "ref").write_text("".join(f"u{i} 가나다라마바사\n" for i in range(3000)))
    make_dir(tmp_path / "corpus")
    script = """
    cp -r corpus/data/train ro/train && mount -o remount,ro ro
    for args in "score --ref ref --hyp ref --json-out ro/x.json" "score --ref ref --hyp ref --align full/a.txt" \
                "lang corpus/data/train ro/lang" "lang corpus/data/train full/lang" \
                "make-feats --nj 1 --config $CONF ro/train" "prep kaldi corpus/data/train --out ro/data"; do
      $KOCALL $args 2> err.txt; echo "rc=$? $(wc -l < err.txt) $(head -c 300 err.txt)"
    done
    """.replace("$CONF", str(REPO / "conf" / "fbank.yaml"))
    proc = _in_mount_namespace(script, tmp_path)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 6, proc.stdout + proc.stderr
    expected = ["ro/x.json' (Read-only file system)", "full/a.txt' (No space left on device)",
                "ro/lang' (Read-only file system)", "full/lang' (No space left on device)",
                "Read-only file system", "Read-only file system"]
    for line, fragment in zip(lines, expected):
        assert line.startswith("rc=1 1 Error: ") and fragment in line and "Traceback" not in line, line
    assert not list((tmp_path / "full").iterdir())   # the namespace's mounts are gone; nothing leaked here


def test_log_folder_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    from kocall.features import make_feats
    from tests.test_features import CONF, make_dir

    data = make_dir(tmp_path)
    (data / "log").write_text("not a folder")
    with pytest.raises(KocallError, match="cannot make the log folder .*log' \\(File exists\\)"):
        make_feats(data, CONF, nj=2, show_progress=False, cmd="run.pl")
    assert not (data / "feats.scp").exists()


@pytest.mark.parametrize("digits", [5000, 20000])
def test_huge_numbers_are_read_digit_by_digit(tmp_path: Path, digits: int) -> None:
    from kocall.text_norm import normalize_text

    assert normalize_text("1" * digits + "번") == "일" * digits + " 번"
    assert normalize_text("9" * digits + ".5") == "구" * digits + " 점 오"
    result = run_kocall("normalize", "--plain", str((tmp_path / "t").write_text("1" * digits + "\n") and tmp_path / "t"))
    assert result.exit_code == 0 and result.output == "일" * digits + "\n"


def test_a_crlf_tsv_manifest_is_read_like_lf(tmp_path: Path) -> None:
    from kocall.corpora.tsv import read_tsv_manifest
    from tests.test_reliability import write_wav

    write_wav(tmp_path / "a.wav")
    rows = "utt_id\tspeaker\tpath\ttext\n" + "u1\tspk\ta.wav\t안녕 하세요\n"
    (tmp_path / "lf.tsv").write_text(rows)
    (tmp_path / "crlf.tsv").write_bytes(rows.replace("\n", "\r\n").encode())
    assert read_tsv_manifest(tmp_path / "crlf.tsv") == read_tsv_manifest(tmp_path / "lf.tsv")
    (tmp_path / "bad.tsv").write_text("id,speaker,path,text\n")
    with pytest.raises(DataError, match="first line must be the header .* not 'id,speaker,path,text'"):
        read_tsv_manifest(tmp_path / "bad.tsv")


# ------------------------------------------------------------------ 6/7. partial artifacts, "in use"
def test_job_temps_of_a_killed_stage_are_removed_whatever_the_new_nj(tmp_path: Path) -> None:
    """A killed stage (its pid gone) leaves job shards named after it; the next run, with another
    --nj, removes them; a live stage's are kept."""
    from kocall.features import _job_files, make_feats
    from tests.test_features import CONF, make_dir
    from tests.test_reliability import _dead_pid

    data = make_dir(tmp_path)
    ark_dir = data / "data"
    ark_dir.mkdir()
    import socket

    host = socket.gethostname().split(".")[0]
    dead = _job_files(ark_dir.resolve(), 1, 4, f"{_dead_pid()}@{host}")
    live = _job_files(ark_dir.resolve(), 1, 4, f"{os.getpid()}@{host}")
    for path in (*dead, *live):
        path.write_bytes(b"shard")
    make_feats(data, CONF, nj=2, show_progress=False, cmd="run.pl")
    assert not any(p.exists() for p in dead) and all(p.exists() for p in live)
    assert sorted(p.name for p in ark_dir.iterdir() if not p.name.startswith(".")) == ["feats.1.ark", "feats.2.ark"]


def test_a_second_make_feats_on_one_data_dir_is_told_it_is_in_use(tmp_path: Path) -> None:
    import fcntl

    from kocall.fileio import LOCK_NAME
    from tests.test_features import CONF, make_dir

    data = make_dir(tmp_path)
    with open(data / LOCK_NAME, "a") as held:   # what a running make-feats holds
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        proc = subprocess.run([sys.executable, "-m", "kocall.cli", "make-feats", "--nj", "1", "--config", str(CONF),
                               str(data)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "is in use by another make-feats" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and not (data / "feats.scp").exists()


def test_a_line_break_in_the_data_path_is_refused_before_feats_scp(tmp_path: Path) -> None:
    from kocall.features import make_feats
    from tests.test_features import CONF, make_dir

    data = make_dir(tmp_path / "x").rename(tmp_path / "a\nb")   # its audio stays where it was
    with pytest.raises(DataError, match="line break"):
        make_feats(data, CONF, nj=1, show_progress=False)
    assert not (data / "feats.scp").exists() and not (data / "data").exists()


# ------------------------------------------------------------------ 4. silent wrong results
def test_a_test_set_identical_to_train_is_named_in_a_warning(tmp_path: Path, capsys) -> None:
    from kocall.corpora import write_prepared
    from kocall.datadir import Utterance
    from tests.test_reliability import write_wav

    wavs = [str(write_wav(tmp_path / f"{i}.wav", seconds=0.3 + 0.1 * i)) for i in range(4)]
    train = [Utterance(f"s-{i}", "s", wavs[i], "가나", None) for i in range(3)]
    copy = tmp_path / "copy.wav"
    copy.write_bytes(Path(wavs[0]).read_bytes())
    sets = {"train": train, "dev": [Utterance("d-3", "d", wavs[3], "다라", None)],
            "test": [Utterance(f"t-{i}", "t", wavs[i], "가나", None) for i in range(3)],   # train again
            "test2": [Utterance("c-0", "c", str(copy), "가나", None), Utterance("d-4", "d", wavs[3], "마", None)]}
    write_prepared(tmp_path / "data", sets, ["test", "test2"])
    err = capsys.readouterr().err
    assert f"set 'test' ({tmp_path / 'data' / 'test'}) is identical to train ({tmp_path / 'data' / 'train'})" in err
    assert "set 'test2'" in err and "shares 1 of 2 utterances with train" in err   # a copied file counts
    assert "set 'dev'" not in err


def test_the_process_pool_never_outnumbers_its_jobs(monkeypatch) -> None:
    import multiprocessing

    from kocall import parallel

    sizes = []
    real = multiprocessing.get_context

    def spy(method):
        ctx = real(method)

        class Ctx:
            def Pool(self, n, **kw):   # noqa: N802 (multiprocessing's name)
                sizes.append(n)
                return ctx.Pool(n, **kw)
        return Ctx()

    monkeypatch.setattr(parallel.multiprocessing, "get_context", spy)
    assert sorted(parallel.imap_progress(abs, [-1, -2, -3], 1000, "t")) == [1, 2, 3]
    assert sizes == [3]


@pytest.mark.parametrize("change, message", [
    ({"d_model": 8192, "num_heads": 4}, "asks for a model of .* parameters, more than 'model.pt'"),
    ({"num_layers": 200}, "asks for a model of .* parameters, more than 'model.pt'"),
    ({"num_layers": 10**9}, "model.num_layers 1000000000 is outside 0..1024")])
def test_a_model_config_is_sized_against_its_weights_before_anything_is_built(tmp_path: Path, change: dict,
                                                                              message: str) -> None:
    """A config.json asking for far more parameters than model.pt holds (a 2 kB edit asking for
    hundreds of GB) is refused before a model is built; the real one loads."""
    import json
    import resource

    from kocall.model_dir import load_model_dir
    from tests.test_decode import make_model_dir

    model = make_model_dir(tmp_path / "final")
    load_model_dir(model)
    config = json.loads((model / "config.json").read_text())
    config["model"].update(change)
    (model / "config.json").write_text(json.dumps(config))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(KocallError, match=message):
        load_model_dir(model)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000   # kB: nothing big allocated


def test_channel_job_files_of_a_killed_run_are_removed_by_the_next(tmp_path: Path) -> None:
    import socket

    from kocall.corpora.shared_ko import _channel_dispatched
    from tests.test_reliability import _dead_pid

    host = socket.gethostname().split(".")[0]
    stale = tmp_path / f".channel_jobs.{_dead_pid()}@{host}.run.tmp"
    stale.mkdir()
    (stale / "jobs.json.3.json").write_text("[]")   # job 3 of a run with another --nj
    assert _channel_dispatched([], tmp_path, 2, "run.pl") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


def test_an_output_that_is_a_device_fifo_or_link_is_written_through_never_replaced(tmp_path: Path) -> None:
    """`--json-out /dev/null` as root: the atomic rename would have replaced /dev/null itself."""
    import stat
    import threading

    from kocall.fileio import atomic_write

    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))   # a /dev/null of our own
    except PermissionError:
        pytest.skip("mknod needs root")
    with atomic_write(null) as handle:
        handle.write("gone\n")
    assert stat.S_ISCHR(os.stat(null).st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    with atomic_write(fifo) as handle:
        handle.write("through\n")
    reader.join(10)
    assert got == [b"through\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    (tmp_path / "target").write_text("old\n")
    (tmp_path / "link").symlink_to("target")
    with atomic_write(tmp_path / "link") as handle:
        handle.write("new\n")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "target").read_text() == "new\n"
    with pytest.raises(DataError, match="under /dev or /proc that does not exist"):
        with atomic_write("/dev/kocall-no-such-device"):
            pass


def test_a_device_given_as_a_text_input_is_one_line_not_an_endless_read() -> None:
    from kocall.fileio import read_text
    from kocall.stage_decode import load_decode_conf

    for device in ("/dev/zero", "/dev/urandom"):
        with pytest.raises(DataError, match=f"'{device}' is a device, not a file"):
            read_text(device)
    with pytest.raises(DataError, match="is a device"):
        load_decode_conf("/dev/zero")
