"""`kocall synth`: generate the synthetic call-centre telephone corpus (hackathon 2019 layout)."""
from __future__ import annotations

from pathlib import Path

import click

from kocall.options import bounded
from kocall.paths import PACKAGE_CONF

DEFAULT_CONFIG = PACKAGE_CONF / "synth.yaml"   # shipped with the package: found from any folder


@click.command("synth")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config (default: conf/synth.yaml when present)")
@click.option("--nj", type=bounded("nj"), default=1, show_default=True, help="parallel jobs")
@click.option("--seed", type=bounded("seed"), default=None, help="random seed (default: the config's)")
@click.option("--hours", type=bounded("hours"), default=None, help="training audio, hours")
@click.option("--dev-minutes", type=bounded("minutes"), default=None, help="dev audio, minutes")
@click.option("--test-minutes", type=bounded("minutes"), default=None, help="test audio, minutes")
@click.option("--lm-sentences", type=bounded("sentences"), default=None, help="sentences in lm_text.txt")
@click.option("--variants", default=None, help="comma-separated espeak-ng variants to draw voices from")
@click.option("--cmd", default=None, help="render as --nj jobs through run.pl, 'slurm.pl --mem 2G'... "
              "(default or '': processes of this machine)")
@click.option("--job", type=bounded("job"), default=None, hidden=True, help="render only job J of --nj into the staging dir ROOT "
              "(what --cmd runs)")
@click.argument("root", type=click.Path(file_okay=False))
def synth_cmd(config_path: str | None, nj: int, seed: int | None, hours: float | None, dev_minutes: float | None,
              test_minutes: float | None, lm_sentences: int | None, variants: str | None, cmd: str | None,
              job: int | None, root: str) -> None:
    """Generate the corpus into ROOT (built in a temp dir, then renamed into place)."""
    from kocall.synth.generate import SynthConfig, generate_corpus, render_job, stats_text

    if config_path is None and DEFAULT_CONFIG.is_file():
        config_path = str(DEFAULT_CONFIG)
    if job is not None:
        count = render_job(Path(root), SynthConfig.from_yaml(config_path), nj, job)
        click.echo(f"synth: job {job} of {nj}: {count} utterances")
        return
    from kocall.fileio import check_output_dir

    check_output_dir(root, {"--config": config_path})  # ROOT is replaced as a whole
    variant_list = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
    cfg = SynthConfig.from_yaml(config_path, seed=seed, train_hours=hours, dev_minutes=dev_minutes,
                                test_minutes=test_minutes, lm_sentences=lm_sentences, variants=variant_list)
    stats = generate_corpus(Path(root), cfg, nj=nj, cmd=cmd or None)
    click.echo(stats_text(stats), nl=False)
