"""`stylegan-download data|model`: the subcommands, the older spellings (one deprecation line on stderr, then
the same behaviour), the command's help, and the one download loop both subcommands share (issue 24 item 3).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import test_pretrained
from helpers import REPO
from helpers.loopback import closed_port_url
from stylegan_transfer import datasets, download
from stylegan_transfer.inference import pretrained
from test_datasets import make_archive
from test_pretrained import _served_model

cache = test_pretrained.cache  # the download cache fixture


def _note_and_rest(err: str) -> tuple[list[str], list[str]]:
    """stderr split into its deprecation notes and the other lines."""
    lines = err.strip().splitlines()
    notes = [line for line in lines if "deprecated" in line]
    return notes, [line for line in lines if line not in notes]


# ----------------------------------------------------------------------------- the subcommands
def test_data_subcommand_downloads_a_dataset_without_a_note(server, tmp_path, capsys):
    server.files["/apple2orange.zip"] = make_archive(tmp_path, "apple2orange")
    data_dir = tmp_path / "data"
    argv = ["data", "apple2orange", "--data-dir", str(data_dir), "--base-url", server.url]
    assert pretrained.main(argv) == 0
    assert (data_dir / "apple2orange" / "trainB").is_dir()
    captured = capsys.readouterr()
    assert f"apple2orange: {data_dir / 'apple2orange'}" in captured.out
    assert "deprecated" not in captured.err
    assert pretrained.main(["data", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in datasets.DATASETS)


def test_model_subcommand_downloads_a_generator_without_a_note(server, cache, tmp_path, capsys):
    _served_model(tmp_path, server, "apple2orange")
    assert pretrained.main(["model", "--base-url", server.url, "apple2orange"]) == 0
    assert (cache / "pretrained" / "apple2orange.safetensors").is_file()
    assert "deprecated" not in capsys.readouterr().err
    assert pretrained.main(["model", "--list"]) == 0
    captured = capsys.readouterr()
    assert all(name in captured.out for name in pretrained.MODELS) and captured.err == ""


def test_model_errors_stay_one_line(cache, monkeypatch, capsys):
    monkeypatch.setenv("STYLEGAN_TRANSFER_OFFLINE", "1")
    assert pretrained.main(["model", "style_monet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "STYLEGAN_TRANSFER_OFFLINE" in err
    assert "`stylegan-download model --help`" in err  # the hint names the new spelling


# ----------------------------------------------------------------------------- the older spellings
@pytest.mark.parametrize(
    ("old", "new"),
    [
        (["--list"], "stylegan-download data --list"),
        (["--pretrained", "--list"], "stylegan-download model --list"),
        (["--list", "--pretrained"], "stylegan-download model --list"),  # the flag was found anywhere
    ],
)
def test_old_spellings_print_one_note_naming_the_new_one(old, new, capsys):
    assert pretrained.main(old) == 0
    captured = capsys.readouterr()
    notes, rest = _note_and_rest(captured.err)
    assert len(notes) == 1 and f"`{new}`" in notes[0] and rest == []
    assert pretrained.main(new.split()[1:]) == 0
    assert capsys.readouterr().out == captured.out  # the same listing as the new spelling


def test_old_dataset_spelling_downloads_with_one_note(server, tmp_path, capsys):
    server.files["/facades.zip"] = make_archive(tmp_path, "facades")
    data_dir = tmp_path / "data"
    assert pretrained.main(["facades", "--data-dir", str(data_dir), "--base-url", server.url]) == 0
    assert (data_dir / "facades" / "trainA").is_dir()
    notes, _ = _note_and_rest(capsys.readouterr().err)
    assert len(notes) == 1 and "`stylegan-download data facades --data-dir " in notes[0]


def test_old_model_spelling_keeps_its_one_line_error_after_the_note(cache, capsys):
    argv = ["--base-url", closed_port_url(), "--timeout", "3", "style_monet"]
    assert pretrained.main(["model", *argv]) == 2
    new_err = capsys.readouterr().err.strip().splitlines()
    assert pretrained.main(["--pretrained", *argv]) == 2
    old_err = capsys.readouterr().err.strip().splitlines()
    assert len(new_err) == 1 and len(old_err) == 2
    assert "deprecated" in old_err[0] and "`stylegan-download model --base-url" in old_err[0]
    assert old_err[1] == new_err[0]


def test_the_command_line_prints_exactly_one_note_for_an_old_spelling():
    """Through a real process: stderr holds the note and nothing else (no warning machinery, no logging)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    entry_point = "from stylegan_transfer.inference.pretrained import main; raise SystemExit(main())"
    command = [sys.executable, "-c", entry_point]  # what the stylegan-download script runs
    old = subprocess.run([*command, "--list"], capture_output=True, text=True, env=env, timeout=120)
    new = subprocess.run([*command, "data", "--list"], capture_output=True, text=True, env=env, timeout=120)
    assert old.returncode == new.returncode == 0 and old.stdout == new.stdout
    assert new.stderr == ""
    assert old.stderr.count("\n") == 1 and "`stylegan-download data --list`" in old.stderr


# ----------------------------------------------------------------------------- help
def test_help_names_both_subcommands_and_each_has_its_own(capsys):
    assert pretrained.main(["--help"]) == 0
    shown = capsys.readouterr().out
    assert "data" in shown and "model" in shown and "deprecation" in shown
    with pytest.raises(SystemExit) as exit_code:
        pretrained.main([])
    assert exit_code.value.code == 2 and "choose a command" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrained.main(["data", "--help"])
    assert "usage: stylegan-download data" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        pretrained.main(["model", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "usage: stylegan-download model" in shown and "<cache>/pretrained/<name>.pth" in shown


# ----------------------------------------------------------------------------- one download loop
def test_datasets_and_pretrained_generators_share_one_download_loop():
    assert datasets.download_file is download.download_file
    assert pretrained.download_file is download.download_file
    assert datasets.DownloadError is download.DownloadError is pretrained.DownloadError
