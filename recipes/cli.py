"""The `kocall` command group. Subcommands are imported lazily, so `kocall score`
does not pay for importing torch or numba."""
from __future__ import annotations

import importlib

import click

from kocall.rxspec import allow_pipes_option

# name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "prep": "kocall.corpora.cli:prep_cmd",
    "normalize": "kocall.text_norm:normalize_cmd",
    "validate-data-dir": "kocall.cli:validate_data_dir_cmd",
    "synth": "kocall.synth.cli:synth_cmd",
    "fbank": "kocall.features:fbank_cmd",
    "make-feats": "kocall.features:make_feats_cmd",
    "compute-cmvn": "kocall.features:compute_cmvn_cmd",
    "lang": "kocall.lang:lang_cmd",
    "lm": "kocall.lm:lm_cmd",
    "train": "kocall.conformer_ctc.train:train_cmd",
    "decode": "kocall.decode:decode_cmd",
    "score": "kocall.scoring:score_cmd",
    "export": "kocall.export:export_cmd",
    "report": "kocall.report:report_cmd",
    "stamp": "kocall.stamp:stamp_cmd",
}


class LazyGroup(click.Group):
    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing must not import every subcommand (torch, numba): names only.
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name].split(":")[0]) for name in self.list_commands(ctx)])

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """kocall: Korean telephone speech recognition utilities."""


@click.command("validate-data-dir")
@click.option("--check-audio", is_flag=True, help="also decode every audio file")
@allow_pipes_option
@click.argument("data_dir")
def validate_data_dir_cmd(data_dir: str, check_audio: bool) -> None:
    """Check a Kaldi data directory; exit 1 naming the first bad utterance and file."""
    from kocall.datadir import validate_data_dir

    data = validate_data_dir(data_dir, check_audio=check_audio)
    click.echo(f"{data_dir}: OK ({len(data.wav)} utterances, {len(set(data.utt2spk.values()))} speakers)")


if __name__ == "__main__":
    main()
