"""Session fixtures: each real dataset is curated once per test session (Chromophore takes
seconds)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pairfactory.pairs import CuratedDataset, curate
from pairfactory.pairs.registry import BUNDLED_DATA_DIR


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    # the suite shares 2 cores; curation never imports torch (importing it here would cost seconds),
    # but if another test module loaded it, keep the house rule of one thread
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def chromophore_csv() -> Path:
    return BUNDLED_DATA_DIR / "chromophore" / "DB_for_chromophore_Sci_Data_rev02.csv"


@pytest.fixture(scope="session")
def freesolv_txt() -> Path:
    return BUNDLED_DATA_DIR / "freesolv" / "database.txt"


@pytest.fixture(scope="session")
def mnsol_alldata_csv(data_dir: Path) -> Path:
    path = data_dir / "mnsol" / "MNSol_alldata.csv"
    if not path.exists():
        message = f"MNSol_alldata.csv not found at {path} (set PAIRFACTORY_DATA_DIR)"
        if os.environ.get("PAIRFACTORY_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def chromophore_curated(chromophore_csv: Path) -> CuratedDataset:
    return curate("chromophore", chromophore_csv)


@pytest.fixture(scope="session")
def freesolv_curated(freesolv_txt: Path) -> CuratedDataset:
    return curate("freesolv", freesolv_txt)


@pytest.fixture(scope="session")
def mnsol_curated(mnsol_csv: Path) -> CuratedDataset:
    return curate("mnsol", mnsol_csv)


@pytest.fixture(scope="session")
def combisolv_curated(combisolv_csv: Path) -> CuratedDataset:
    return curate("combisolv", combisolv_csv)


@pytest.fixture(scope="session")
def freesolv_cgib_curated(combisolv_csv: Path) -> CuratedDataset:
    return curate("freesolv_cgib", combisolv_csv)
