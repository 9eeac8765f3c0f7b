"""`snakemake --lint` has nothing to say about the workflow, snakefmt and ruff would change nothing,
ruff's lint is clean, and every rule has a log, threads and resources."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from workflow_helpers import REPO_ROOT, run_snakemake


def _embedded_default_in(workdir: Path) -> None:
    """The repository's config.yaml, with its (relative) bundled-data paths made absolute."""
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    for key, value in config["data"].items():
        if value is not None:
            config["data"][key] = str(REPO_ROOT / value)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_lint_reports_nothing(tmp_path: Path) -> None:
    _embedded_default_in(tmp_path)
    run = run_snakemake(tmp_path, "--lint")
    assert run.returncode == 0, run.output[-3000:]
    assert "Lints for" not in run.output, run.output


def test_snakefmt_leaves_the_workflow_unchanged() -> None:
    snakefmt = Path(sys.executable).parent / "snakefmt"
    files = [REPO_ROOT / "Snakefile", *sorted((REPO_ROOT / "workflow" / "rules").glob("*.smk"))]
    proc = subprocess.run(
        [str(snakefmt), "--check", *map(str, files)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _ruff(*args: str) -> subprocess.CompletedProcess:
    ruff = Path(sys.executable).parent / "ruff"
    return subprocess.run(
        [str(ruff), *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_format_leaves_the_python_unchanged() -> None:
    proc = _ruff("format", "--check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_lint_reports_nothing() -> None:
    # the rules (line length 100 among them) are in pyproject.toml, [tool.ruff]
    proc = _ruff("check", ".")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr


def test_every_rule_has_log_threads_resources_and_calls_the_cli() -> None:
    rule_paths = sorted((REPO_ROOT / "workflow" / "rules").glob("*.smk"))
    for path in [p for p in rule_paths if p.name != "common.smk"]:
        text = path.read_text()
        blocks = re.split(r"\n(?=(?:rule|checkpoint) \w+:)", text)[1:]
        assert blocks, f"{path.name} holds no rule"
        for block in blocks:
            name = block.split(":", 1)[0]
            for directive in ("log:", "threads:", "resources:", "conda:", "shell:"):
                assert f"\n    {directive}" in block, f"{path.name}: {name} lacks {directive}"
            assert "pairfactory " in block.split("shell:", 1)[1], (
                f"{path.name}: {name} does not call the CLI"
            )


def test_snakefile_is_thin() -> None:
    text = (REPO_ROOT / "Snakefile").read_text()
    assert 'configfile: "config.yaml"' in text
    assert 'validate(config, "src/pairfactory/schemas/config.schema.yaml")' in text
    # only the table of contents: includes and the default target
    assert re.findall(r"^rule (\w+):", text, re.MULTILINE) == ["all"]
    assert "import pairfactory" not in text
