"""The `kocall` command group. Subcommands are imported lazily, so `kocall score`
does not pay for importing torch or numba."""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import click

from kocall import __version__
from kocall.errors import KocallError
from kocall.rxspec import allow_pipes_option

# name -> "module:attribute" of a click command, in the order of the recipe's stages (run.sh),
# then the tools around them; `kocall --help` lists them in this order.
COMMANDS: dict[str, str] = {
    "synth": "kocall.synth.cli:synth_cmd",                   # stage 0: the synthetic corpus
    "prep": "kocall.corpora.cli:prep_cmd",                   # stage 0: corpus -> data dirs
    "validate-data-dir": "kocall.cli:validate_data_dir_cmd",
    "make-feats": "kocall.features:make_feats_cmd",          # stage 1
    "compute-cmvn": "kocall.features:compute_cmvn_cmd",
    "lang": "kocall.lang:lang_cmd",                          # stage 2
    "lm": "kocall.lm:lm_cmd",                                # stage 3
    "train": "kocall.trainer:train_cmd",                     # stage 4
    "decode": "kocall.decode:decode_cmd",                    # stage 5 decodes data dirs; this, files
    "score-decodes": "kocall.scoring:score_decodes_cmd",     # stage 6
    "score": "kocall.scoring:score_cmd",
    "export": "kocall.export:export_cmd",                    # stage 7
    "convert-whisper": "kocall.whisper_ctc.ct2:convert_whisper_cmd",   # CTranslate2 Whisper -> OpenAI .pt
    "report": "kocall.report:report_cmd",
    "package": "kocall.package:package_cmd",                 # stage 7: the self-contained model package
    "fbank": "kocall.features:fbank_cmd",                    # tools
    "normalize": "kocall.text_norm:normalize_cmd",
    "stamp": "kocall.stamp:stamp_cmd",
}
# Plumbing of the shell stages (run.sh's up-to-date markers): callable, not listed.
HIDDEN_COMMANDS = frozenset({"stamp"})


def command_summary(target: str) -> str:
    """First line of the docstring of the command function `module:attr`, read from the source
    with ast: `kocall --help` must not import every subcommand (torch, numba)."""
    module_name, attr = target.split(":")
    try:
        spec = importlib.util.find_spec(module_name)
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (ImportError, AttributeError, TypeError, OSError, SyntaxError, ValueError):
        return ""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == attr:
            doc = ast.get_docstring(node) or ""
            return doc.strip().split("\n")[0]
    return ""


def os_error_line(err: OSError) -> str:
    """One line for an OSError that no reader or writer turned into a DataError: what failed on
    which path, and the system's reason (read-only filesystem, no space left, not a directory)."""
    paths = " -> ".join(f"'{p}'" for p in (err.filename, err.filename2) if p is not None)
    return f"{paths or 'a file'}: {err.strerror or type(err).__name__}"


class LazyGroup(click.Group):
    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, command_summary(COMMANDS[name])) for name in self.list_commands(ctx)
                                if name not in HIDDEN_COMMANDS])

    def invoke(self, ctx: click.Context):
        # Readers name the file and line of bad input (kocall.fileio.read_text); this is the net
        # for any that does not: one line, never a traceback.
        try:
            return super().invoke(ctx)
        except UnicodeDecodeError as err:
            raise KocallError(f"an input file is not valid UTF-8 ({err.reason}, byte 0x{err.object[err.start]:02x} "
                              f"at offset {err.start}); convert it, e.g. `iconv -f cp949 -t utf-8`") from None
        except RecursionError:
            raise KocallError("an input is nested too deeply to be read (e.g. JSON)") from None
        except OSError as err:   # a read-only or full filesystem, a file where a folder should be
            raise KocallError(os_error_line(err)) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="kocall", message="%(prog)s %(version)s")
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
