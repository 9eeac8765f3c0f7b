"""envs/cpu.yml and envs/gpu.yml mirror constraints.txt (the verified pins), with the documented
differences: the CPU file takes torch's CPU build and no CUDA wheels, and the xtb program; the GPU
file takes DGL's CUDA build from DGL's wheel repository."""

from __future__ import annotations

import re

import yaml
from workflow_helpers import REPO_ROOT

CUDA_ONLY = re.compile(r"^(nvidia-|triton==)", re.IGNORECASE)


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def _env(name: str) -> tuple[dict, dict[str, str], list[str]]:
    env = yaml.safe_load((REPO_ROOT / "envs" / name).read_text())
    (pip_section,) = [d for d in env["dependencies"] if isinstance(d, dict)]
    options = [p for p in pip_section["pip"] if p.startswith("--")]
    pins = dict(p.lower().split("==") for p in pip_section["pip"] if not p.startswith("--"))
    return env, pins, options


def test_cpu_env_mirrors_constraints() -> None:
    env, pins, options = _env("cpu.yml")
    assert "python=3.11" in env["dependencies"]
    expected = {n: v for n, v in _constraints().items() if not CUDA_ONLY.match(f"{n}==")}
    expected["torch"] = expected["torch"] + "+cpu"
    assert pins == expected
    assert options == ["--extra-index-url https://download.pytorch.org/whl/cpu"]
    # the solvation rule runs the xtb program, which no pip wheel provides
    assert "xtb=6.5.1" in env["dependencies"]


def test_gpu_env_mirrors_constraints_with_dgls_cuda_build() -> None:
    env, pins, options = _env("gpu.yml")
    assert "python=3.11" in env["dependencies"]
    expected = dict(_constraints())
    expected["dgl"] = expected["dgl"] + "+cu121"
    assert pins == expected
    assert options == ["--find-links https://data.dgl.ai/wheels/torch-2.2/cu121/repo.html"]
    text = (REPO_ROOT / "envs" / "gpu.yml").read_text()
    assert "not from PyPI" in text or "do not come from PyPI" in text
