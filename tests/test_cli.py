"""The top-level command: version, help, and that every stage documents itself with an example."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pairfactory import __version__
from pairfactory.cli import SUBCOMMANDS, build_parser, main


def test_version_is_printed(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pairfactory {__version__}"


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-stage"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help_with_an_example(command):
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert command in subparsers.choices, f"subcommand {command} is not registered"
    help_text = subparsers.choices[command].format_help()
    assert "example" in help_text.lower(), f"`pairfactory {command} --help` shows no example"
    assert f"pairfactory {command}" in help_text


def test_help_does_not_import_torch():
    # `pairfactory --help` must stay fast on a login node: no torch, dgl or pyscf at parse time.
    code = (
        "import sys; from pairfactory.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'dgl', 'pyscf', 'tblite') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
