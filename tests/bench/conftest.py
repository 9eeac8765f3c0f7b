"""What the tests of the bench scripts share."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench_script() -> Callable[[str], ModuleType]:
    """Import a bench script by name in this process (no interpreter start per call), with
    bench/ on the path as when the script runs, so that it can import its neighbours."""

    def load(name: str) -> ModuleType:
        sys.path.insert(0, str(BENCH))
        try:
            spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        finally:
            sys.path.remove(str(BENCH))

    return load
