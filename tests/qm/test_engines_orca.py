"""ORCA: parsing real ORCA 5/6 outputs, the generated input, the binary lookup, and end-to-end
runs of the engine against a fake ``orca`` executable that replays a real output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_orca import write_fake_orca

from pairfactory.errors import UserError
from pairfactory.qm.engines import build_engine
from pairfactory.qm.engines.orca import ORCA_BINARY_ENV, OrcaEngine, OrcaSettings, parse_orca_output
from pairfactory.qm.records import SampleStatus

# The real runs (cclib regression data, see ../shared/data/orca_outputs/SOURCE.md):
# p-divinylbenzene, B3LYP/STO-3G, optimization converged after 3 cycles. Values read off the files
# by eye.
EXPECTED = {
    "basicORCA5.0_dvb_gopt.out": (
        "5.0.1",
        -382.055133372796,
        [-1.417672, 0.228782, 0.0],
        [-4.934094, -0.068002, 0.0],
    ),
    "basicORCA6.0_dvb_gopt.out": (
        "6.0.0",
        -382.055133399486,
        [-1.417709, 0.228462, 0.0],
        [-4.934323, -0.067378, 0.0],
    ),
}
DVB_SYMBOLS = ["C"] * 6 + ["H"] * 4 + ["C", "C", "H", "H", "C", "C", "H", "H", "H", "H"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parse_real_orca_outputs(orca_outputs_dir: Path, name: str) -> None:
    version, energy, first_atom, last_atom = EXPECTED[name]
    parsed = parse_orca_output((orca_outputs_dir / name).read_text())
    assert parsed.version == version
    assert parsed.final_energy_hartree == energy  # the last of the per-cycle energies
    assert parsed.converged and parsed.terminated_normally
    assert not parsed.scf_failed and not parsed.max_cycles_reached and parsed.error_message == ""
    assert parsed.n_cycles == 3
    assert parsed.symbols == DVB_SYMBOLS
    # The geometry after the stationary point, not the input one (C0 started at -1.415253).
    assert parsed.final_positions_angstrom.shape == (20, 3)
    assert np.allclose(parsed.final_positions_angstrom[0], first_atom)
    assert np.allclose(parsed.final_positions_angstrom[-1], last_atom)


def test_parse_truncated_and_empty_output(orca_outputs_dir: Path) -> None:
    text = (orca_outputs_dir / "basicORCA6.0_dvb_gopt.out").read_text()
    cut = text[: text.index("GEOMETRY OPTIMIZATION CYCLE   2")]  # killed during cycle 2
    parsed = parse_orca_output(cut)
    assert not parsed.converged and not parsed.terminated_normally
    assert parsed.n_cycles == 1 and parsed.final_energy_hartree == -382.055108617704
    assert np.allclose(parsed.final_positions_angstrom[0], [-1.415253, 0.230222, 0.0])
    external = parse_orca_output(
        "FINAL SINGLE POINT ENERGY (From external program)      -5.070544440612\n"
    )
    assert external.final_energy_hartree == -5.070544440612
    empty = parse_orca_output("")
    assert (
        empty.version is None
        and empty.final_energy_hartree is None
        and empty.final_positions_angstrom is None
    )


def dvb(orca_outputs_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The starting geometry of the real runs, read from their input file."""
    lines = (orca_outputs_dir / "basicORCA6.0_dvb_gopt.inp").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("* xyz")) + 1
    rows = [line.split() for line in lines[start:] if line.strip() and not line.startswith("*")][
        :20
    ]
    numbers = np.array([{"C": 6, "H": 1}[r[0]] for r in rows])
    return numbers, np.array([[float(v) for v in r[1:4]] for r in rows])


def test_generated_input_file(tmp_path: Path, orca_outputs_dir: Path) -> None:
    binary = write_fake_orca(tmp_path, "replay", orca_outputs_dir / "basicORCA6.0_dvb_gopt.out")
    engine = build_engine(
        {
            "name": "orca",
            "orca": {
                "binary": str(binary),
                "keywords": "B97-3c Opt",
                "maxcore_mb": 2500,
                "max_steps": 50,
                "extra_blocks": "%scf MaxIter 300 end",
            },
        },
        threads=4,
    )
    z, xyz = dvb(orca_outputs_dir)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    inp, argv = engine.write_input(run_dir, z, xyz, charge=-1, multiplicity=2)
    text = inp.read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "! B97-3c Opt"
    assert "%pal nprocs 4 end" in lines  # threads of the stage when nprocs is not set
    assert (
        "%maxcore 2500" in lines
        and "%geom MaxIter 50 end" in lines
        and "%scf MaxIter 300 end" in lines
    )
    assert "*xyz -1 2" in lines
    coords = [line.split() for line in lines[lines.index("*xyz -1 2") + 1 : lines.index("*")]]
    assert [c[0] for c in coords] == DVB_SYMBOLS
    assert np.array_equal(
        np.array([[float(v) for v in c[1:]] for c in coords]), xyz
    )  # full precision
    # ORCA needs its full path (for %pal runs); ASE's profile appends the input file name.
    assert argv == [str(binary.resolve()), "orca.inp"]
    assert (
        OrcaEngine(OrcaSettings(binary=str(binary), nprocs=2), threads=4)
        .orca_blocks()
        .startswith("%pal nprocs 2 end")
    )


def test_missing_binary_is_one_user_error_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ORCA_BINARY_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no orca here
    with pytest.raises(UserError, match=r"engine\.orca\.executable"):
        build_engine({"name": "orca"})
    with pytest.raises(UserError, match=r"engine\.orca\.executable"):
        build_engine({"name": "orca", "orca": {"binary": str(tmp_path / "nope" / "orca")}})
    not_executable = tmp_path / "orca"
    not_executable.write_text("")
    with pytest.raises(UserError, match="not an executable"):
        build_engine({"name": "orca", "orca": {"binary": str(not_executable)}})
    # The environment variable is the second place looked at.
    binary = write_fake_orca(tmp_path, "replay")
    monkeypatch.setenv(ORCA_BINARY_ENV, str(binary))
    assert build_engine({"name": "orca"}).binary == str(binary)


def test_keywords_without_opt_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="Opt"):
        build_engine(
            {"name": "orca", "orca": {"binary": str(write_fake_orca(tmp_path)), "keywords": "XTB2"}}
        )


@pytest.mark.parametrize(
    "mode, status",
    [
        ("replay", SampleStatus.ok),
        ("max_cycles", SampleStatus.not_converged),
        ("scf_fail", SampleStatus.scf_failed),
        ("crash", SampleStatus.error),
    ],
)
def test_engine_end_to_end_with_fake_binary(
    tmp_path: Path, orca_outputs_dir: Path, mode: str, status: SampleStatus
) -> None:
    binary = write_fake_orca(tmp_path, mode, orca_outputs_dir / "basicORCA6.0_dvb_gopt.out")
    engine = build_engine(
        {"name": "orca", "orca": {"executable": str(binary), "keywords": "B3LYP STO-3G Opt"}}
    )
    z, xyz = dvb(orca_outputs_dir)
    result = engine.optimize(z, xyz)
    assert result.status is status, result.message
    assert (
        (tmp_path / "seen.inp").read_text().startswith("! B3LYP STO-3G Opt")
    )  # the binary got our input
    if mode == "replay":
        assert result.converged and result.n_steps == 3
        assert result.energy_hartree == -382.055133399486
        assert np.allclose(result.positions_angstrom[0], [-1.417709, 0.228462, 0.0])
        assert result.engine_version == "orca 6.0.0"
    elif mode == "max_cycles":
        # The last cycle's geometry and energy are returned.
        assert not result.converged and result.energy_hartree == -382.055133025246
        assert result.positions_angstrom.shape == (20, 3) and "not converged" in result.message
    elif mode == "scf_fail":
        assert "SCF" in result.message
    else:
        assert "code 3" in result.message and "segmentation fault" in result.message


def test_engine_timeout_kills_orca(tmp_path: Path, orca_outputs_dir: Path) -> None:
    binary = write_fake_orca(tmp_path, "hang", orca_outputs_dir / "basicORCA6.0_dvb_gopt.out")
    engine = build_engine(
        {"name": "orca", "orca": {"binary": str(binary), "keywords": "XTB2 Opt", "timeout_s": 0.5}}
    )
    z, xyz = dvb(orca_outputs_dir)
    result = engine.optimize(z, xyz)  # the configured timeout_s applies
    assert result.status is SampleStatus.timeout and "killed" in result.message


def test_output_of_another_molecule_is_an_error(tmp_path: Path, orca_outputs_dir: Path) -> None:
    binary = write_fake_orca(tmp_path, "replay", orca_outputs_dir / "basicORCA5.0_dvb_gopt.out")
    engine = build_engine({"name": "orca", "orca": {"binary": str(binary), "keywords": "XTB2 Opt"}})
    z, xyz = dvb(orca_outputs_dir)
    result = engine.optimize(np.where(z == 6, 7, z), xyz)  # same atom count, other elements
    assert result.status is SampleStatus.error and "other elements" in result.message
