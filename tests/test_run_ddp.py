"""run.sh --ngpu 2 --device cpu: the recipe's training stage reaches steps/train.sh, which runs
torchrun with 2 gloo processes; one optimiser step of that equals one single-process step on
the whole batch (the test of the Slurm path in test_jobs.py does the same through srun)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def recipe_copy(root: Path) -> Path:
    """A recipe folder that is the repository's (links to run.sh, steps/, utils/, the venv...)
    plus one extra model config, conf/model_tiny.yaml, written by the test."""
    recipe = root / "recipe"
    recipe.mkdir()
    for name in ("run.sh", "path.sh", "steps", "utils", "local", ".venv", "tools"):
        if (REPO / name).exists():
            (recipe / name).symlink_to(REPO / name)
    (recipe / "conf").mkdir()
    for conf in (REPO / "conf").iterdir():
        (recipe / "conf" / conf.name).symlink_to(conf)
    return recipe


def test_run_sh_ngpu_trains_one_ddp_step_equal_to_the_single_process_step(tmp_path: Path) -> None:
    import torch

    from kocall.dataset import make_batches
    from kocall.trainer import RunOptions, run_training
    from tests.test_train import TEXTS, make_data_dir, make_lang, write_conf

    if not (REPO / ".venv" / "bin" / "torchrun").exists():
        pytest.skip("no torchrun in .venv (run utils/setup_env.sh)")
    recipe, data, exp = recipe_copy(tmp_path), tmp_path / "data", tmp_path / "exp"
    train = make_data_dir(data, TEXTS, seed=0)
    make_data_dir(data, TEXTS[:2], seed=1, name="dev")
    make_lang(data).rename(data / "lang_char")
    (data / ".done").mkdir()
    for marker in ("feats_fbank", "lang_char"):   # what stages 1 and 2 would have left
        (data / ".done" / marker).write_text("prepared by the test\n")
    (data / "test_sets").write_text("")

    lengths = [int(line.split()[1]) for line in (train / "utt2num_frames").read_text().splitlines()]
    seed = 3
    # The largest frame budget that cuts the 6 utterances into exactly 2 batches: one per rank.
    two = [f for f in range(sum(lengths), 0, -1) if len(make_batches(lengths, f, seed, 0, jitter=0.1)) == 2]
    assert two, "no frame budget gives two batches"
    training = {"epochs": 1, "avg": 1, "checkpoint_every": 1000, "log_every": 1}
    write_conf(recipe / "conf" / "model_tiny.yaml", batching={"max_frames": two[0]}, training=training)
    conf_one = write_conf(tmp_path / "one.yaml", batching={"max_frames": 10 * sum(lengths)}, training=training)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "RANK", "WORLD_SIZE"))}
    proc = subprocess.run([str(recipe / "run.sh"), "--setup", "false", "--stage", "4", "--stop-stage", "4",
                           "--model", "tiny", "--unit", "char", "--ngpu", "2", "--threads", "1", "--seed", str(seed),
                           "--data", str(data), "--exp", str(exp)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ddp = torch.load(exp / "tiny_char" / "checkpoints" / "epoch-1.pt", weights_only=True)["model"]
    assert (exp / "tiny_char" / "final").is_dir()

    def single(conf: Path, name: str) -> dict:
        run_training(RunOptions(model_conf=str(conf), train_dir=str(train), dev_dir=str(data / "dev"),
                                lang_dir=str(data / "lang_char"), exp_dir=str(tmp_path / name), threads=1, seed=seed,
                                progress=False))
        return torch.load(tmp_path / name / "checkpoints" / "epoch-1.pt", weights_only=True)["model"]

    one, two_steps = single(conf_one, "one"), single(recipe / "conf" / "model_tiny.yaml", "two_steps")
    assert ddp.keys() == one.keys()

    def max_diff(a: dict, b: dict) -> float:
        # Attention key biases are left out: their gradient is zero in exact arithmetic, and
        # Adam turns the rounding residue of another summation order into a step (test_jobs.py).
        return max(float((a[k] - b[k]).abs().max()) for k in a if not k.endswith("attn.in_proj_bias"))

    assert max_diff(ddp, one) < 1e-6, max_diff(ddp, one)
    # One process stepping once per half (2 steps) lands elsewhere: the comparison can tell.
    assert max_diff(two_steps, one) > 1e-4
