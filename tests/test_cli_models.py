"""`classicnets models` and `classicnets summary`: in-process through ``main`` (the parser and the error
handling are the console script's), plus the real console script once, and what its start-up imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from classicnets import list_models
from classicnets.commands import main

BIN = Path(sys.executable).parent / "classicnets"


def run(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """``classicnets ARGS`` in this process: exit code, stdout and stderr as the console script would give."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


@pytest.mark.processes
def test_models_table_lists_every_model_with_exact_counts() -> None:
    """Through the installed console script."""
    result = subprocess.run([str(BIN), "models"], capture_output=True, text=True, timeout=300, env={**os.environ})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in list_models():
        row = next(line for line in lines if line.split() and line.split()[0] == name)
        assert "DIFF" not in row
    assert any(line.startswith("vgg16 ") and "138,357,544" in line and "15.47 G" in line for line in lines)
    assert any(line.startswith("lenet5 ") and "60,000" in line for line in lines)


def test_summary_vgg16_table(capsys: pytest.CaptureFixture) -> None:
    result = run(capsys, "summary", "vgg16")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "features.0" in out and "3*3*3*64 + 64" in out
    assert "138,357,544   torchvision: 138,357,544 (matches)" in out
    assert "15.47 G" in out


def test_summary_formats(capsys: pytest.CaptureFixture) -> None:
    assert main(["summary", "lenet5", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_params"] == 60_000
    assert main(["summary", "resnet20", "--input-size", "1x28x28", "--format", "csv"]) == 0
    csv_out = capsys.readouterr().out
    assert csv_out.splitlines()[0].startswith("name,type,output_shape")
    assert main(["models", "resnet2*", "--format", "json"]) == 0
    assert {r["name"] for r in json.loads(capsys.readouterr().out)} == {"resnet20"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["summary", "vgg17"], "unknown model 'vgg17'; did you mean vgg19, vgg16"),
        (["summary", "lenet5", "--input-size", "1x28x28"], "too small"),
        (["models", "nosuch*"], "no model matches"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    result = run(capsys, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_input_size_is_an_argparse_error(capsys: pytest.CaptureFixture) -> None:
    result = run(capsys, "summary", "vgg16", "--input-size", "big")
    assert result.returncode == 2 and "CxHxW" in result.stderr


@pytest.mark.processes
def test_help_and_import_do_not_load_torch() -> None:
    """``import classicnets`` and ``classicnets --help`` import torch nowhere: it loads once, in the command
    that needs it, after the training commands' re-exec under jemalloc (which would otherwise load it twice)."""
    for code in ("import classicnets", "import sys; sys.argv = ['classicnets', '--help']; "
                 "from classicnets.commands import entry; entry()"):  # fmt: skip
        probe = f"import sys\ntry:\n    exec({code!r})\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == "False", (code, result)
