"""The package as a user installs it: `pip wheel --no-deps .` builds a wheel holding every
subpackage and the packaged configs; installed (not editable) into a fresh venv, `kocall
--version` runs and `kocall decode` run from `/` gives the same transcripts as the source tree.

The fresh venv borrows the dependencies (torch, numba...) of the running interpreter's
site-packages through a .pth line, so the test needs no network and no second copy of torch;
an editable install there is a finder hook that such a line does not run, so `kocall` can only
come from the wheel (the test checks where it was imported from)."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from kocall import __version__

REPO = Path(__file__).resolve().parent.parent


def source_packages() -> set[str]:
    """Every package of the source tree, as imported (folders holding __init__.py)."""
    names = set()
    for root, top in ((REPO / "recipes", "kocall"), (REPO / "kernels", "kocall_kernels")):
        for init in (root / top).rglob("__init__.py"):
            names.add(".".join(init.parent.relative_to(root).parts))
    return names


def source_copy(dest: Path) -> Path:
    """The files git would ship (tracked, and new ones not ignored), copied: a build in the
    working tree would leave build/ there, whose stale modules a later wheel could pick up."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src, dst = REPO / name, dest / name
        if not (src.exists() or src.is_symlink()):
            continue   # deleted in the working tree
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("install")
    source = source_copy(root / "src")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(root / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheels = list((root / "dist").glob("kocall-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)   # pip from ensurepip
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                              str(wheels[0])], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # Only then the dependencies: the running interpreter's site-packages, after the venv's own.
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "_kocall_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    return {"root": root, "wheel": wheels[0], "venv": venv, "purelib": purelib}


def run_installed(installed: dict, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{installed['venv'] / 'bin'}:{env.get('PATH', '')}"
    return subprocess.run(list(args), cwd="/", capture_output=True, text=True, timeout=300, env=env)


def test_wheel_holds_every_subpackage_and_the_configs(installed: dict) -> None:
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    packages = {os.path.dirname(n).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert source_packages() <= packages, sorted(source_packages() - packages)
    confs = {p.name for p in (REPO / "recipes" / "kocall" / "conf").iterdir() if p.suffix in (".yaml", ".conf")}
    assert confs and {f"kocall/conf/{c}" for c in confs} <= set(names)
    assert any(n.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in n for n in names)


def test_installed_kocall_runs_from_the_root_folder(installed: dict) -> None:
    version = run_installed(installed, "kocall", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"kocall {__version__}"
    where = run_installed(installed, str(installed["venv"] / "bin" / "python"), "-c",
                         "import kocall, kocall_kernels, kocall.paths as p; "
                         "print(kocall.__file__); print(kocall_kernels.__file__); print(p.conf_file('conf/fbank.yaml'))")
    assert where.returncode == 0, where.stderr
    lines = where.stdout.split()
    assert all(line.startswith(str(installed["purelib"])) for line in lines), lines   # the wheel, not the source
    assert Path(lines[2]).is_file()


def test_installed_decode_from_the_root_folder_equals_the_source_tree(installed: dict, tmp_path: Path) -> None:
    from kocall.audio import write_wav
    from kocall.decode import decode_cmd
    from tests.test_decode import SR, make_model_dir, speechlike

    model = make_model_dir(tmp_path / "model")
    wavs = []
    for seed, seconds in enumerate((0.6, 0.8, 0.95), start=1):
        wavs.append(tmp_path / "wav" / f"call{seed}.wav")
        write_wav(wavs[-1], speechlike(seconds, seed), SR)
    expected = CliRunner().invoke(decode_cmd, ["--model", str(model), "--greedy", *map(str, wavs)])
    assert expected.exit_code == 0, expected.output
    texts = [line.split(maxsplit=1)[1] for line in expected.stdout.splitlines() if len(line.split()) > 1]
    assert len(set(texts)) >= 2   # a non-trivial comparison
    got = run_installed(installed, "kocall", "decode", "--model", str(model), "--greedy", *map(str, wavs))
    assert got.returncode == 0, got.stderr[-2000:]
    assert got.stdout == expected.stdout
