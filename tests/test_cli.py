"""The top-level command: version, help, and that every stage documents itself with an example."""

from __future__ import annotations

import argparse
import re
import shlex
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


def _help_examples(help_text: str) -> list[list[str]]:
    """The ``pairfactory ...`` command lines of a help text, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", help_text)
    lines = (line.strip().removeprefix("then:").strip() for line in joined.splitlines())
    return [shlex.split(line)[1:] for line in lines if line.startswith("pairfactory ")]


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_help_example_parses(command, capsys):
    """A user copies the examples: each must be a valid command line (flags that exist, values
    of the right type)."""
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    examples = _help_examples(subparsers.choices[command].format_help())
    assert examples
    for argv in examples:
        try:
            build_parser().parse_args(argv)
        except SystemExit as exit_info:
            assert not exit_info.code, (
                f"`pairfactory {shlex.join(argv)}`: {capsys.readouterr().err}"
            )


def test_help_does_not_import_torch():
    # `pairfactory --help` must stay fast on a login node: no torch, dgl or pyscf at parse time.
    code = (
        "import sys; from pairfactory.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'dgl', 'pyscf', 'tblite') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


SHARED_FLAG_STRINGS = ("--config", "--log", "--no-progress", "--pairs-dir")


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_shared_flags_are_defined_once(command):
    # A subcommand takes --config/--log/--no-progress/--pairs-dir from the shared parents, so the
    # flags mean the same everywhere; it never defines its own copy.
    from pairfactory.cli import SHARED_FLAGS, module_for

    module = module_for(command)
    assert set(module.PARENTS) <= set(SHARED_FLAGS)
    own = argparse.ArgumentParser(add_help=False)
    module.add_arguments(own)
    own_flags = {s for action in own._actions for s in action.option_strings}
    assert not own_flags & set(SHARED_FLAG_STRINGS), f"{command} redefines a shared flag"


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_config_is_optional_where_taken(command):
    parser = build_parser(only=command)
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for action in subparsers.choices[command]._actions:
        if "--config" in action.option_strings:
            assert not action.required, f"{command}: --config must be optional"


def test_a_subcommand_imports_only_its_own_stage():
    # `pairfactory plan --help` loads the QM planner's command module, not the ML half.
    code = (
        "import sys\nfrom pairfactory.cli import main\ntry:\n    main(['plan', '--help'])\n"
        "except SystemExit:\n    pass\n"
        "prefixes = ('pairfactory.ml', 'pairfactory.cli.')\n"
        "print(sorted(m for m in sys.modules if m.startswith(prefixes) or m in ('torch', 'dgl')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "['pairfactory.cli.plan']"


def test_without_a_config_file_the_schema_defaults_apply():
    from pairfactory.cli import load_config_arg

    config = load_config_arg(argparse.Namespace(config=None))
    assert config["engine"]["name"] == "xtb"
    assert config["seed"] == 0
