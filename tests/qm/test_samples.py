"""Seeded random complexes: determinism, geometry constraints, errors."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from pairfactory.cli import SHARED_FLAGS
from pairfactory.cli import samples as samples_cli
from pairfactory.errors import UserError
from pairfactory.qm import samples
from pairfactory.qm.samples import (
    EmbeddingError,
    PlacementError,
    SamplingSettings,
    embed_molecule,
    intermolecular_contacts,
    min_distance,
    sample_complex,
    seed_for,
)


def test_seed_for_is_stable_and_in_rdkit_range() -> None:
    # A fixed value: seeds must not change between runs, machines or Python versions (no hash()).
    assert seed_for(0, "sys", 0) == seed_for(0, "sys", 0)
    seeds = {seed_for(g, key, k) for g in (0, 1) for key in ("a", "b") for k in range(20)}
    assert len(seeds) == 80
    assert all(0 <= s < 2**31 for s in seeds)
    assert seed_for(0, "a", 1) != seed_for(0, "a1", 0)  # the separator keeps fields apart


def test_embed_molecule_is_deterministic_and_adds_hydrogens() -> None:
    z1, x1 = embed_molecule("c1ccccc1O", seed=42)
    z2, x2 = embed_molecule("c1ccccc1O", seed=42)
    _, x3 = embed_molecule("c1ccccc1O", seed=43)
    assert list(z1) == [6] * 6 + [8] + [1] * 6
    assert np.array_equal(x1, x2)
    assert not np.array_equal(x1, x3)
    # A chemically sane structure: every bond length in 0.9..1.6 Å, no atoms on top of each other.
    d = np.linalg.norm(x1[:, None] - x1[None], axis=-1)
    assert d[np.triu_indices(len(z1), 1)].min() > 0.9


@pytest.mark.parametrize(
    "smiles, reason",
    [
        ("C1#CC1", "embedding"),  # cyclopropyne: parses, but has no 3D embedding
        ("[C@@H]12C[C@H]1C2", "embedding"),  # trans-bicyclobutane
        ("C1CC", "parse"),  # unclosed ring
    ],
)
def test_unembeddable_smiles_raise_embedding_error(smiles: str, reason: str) -> None:
    with pytest.raises(EmbeddingError) as info:
        embed_molecule(smiles, seed=1)
    assert info.value.smiles == smiles
    assert smiles in str(info.value)
    with pytest.raises(EmbeddingError):
        sample_complex("O", smiles, "bad", 0, 0)


def test_sample_complex_is_bit_identical_for_same_inputs_and_differs_otherwise() -> None:
    a = sample_complex("c1ccccc1O", "O", "phenol|water", 3, 7)
    b = sample_complex("c1ccccc1O", "O", "phenol|water", 3, 7)
    assert np.array_equal(a.positions_angstrom, b.positions_angstrom)
    assert a.arrangement == b.arrangement
    for other in (
        sample_complex("c1ccccc1O", "O", "phenol|water", 4, 7),
        sample_complex("c1ccccc1O", "O", "phenol|water", 3, 8),
        sample_complex("c1ccccc1O", "O", "other key", 3, 7),
    ):
        assert not np.allclose(a.positions_angstrom, other.positions_angstrom)


@pytest.mark.parametrize("n_solvent", [1, 4])
def test_arrangements_have_no_clash_and_every_solvent_touches(n_solvent: int) -> None:
    settings = SamplingSettings(
        n_solvent=n_solvent, clash_distance_angstrom=1.7, contact_distance_angstrom=3.0
    )
    for k in range(6):
        cx = sample_complex("OC(=O)c1ccccc1", "ClC(Cl)Cl", "benzoic|chloroform", k, 0, settings)
        assert cx.n_solvent == n_solvent
        assert list(np.bincount(cx.fragment_index)) == [15] + [5] * n_solvent
        closest, per_copy = intermolecular_contacts(cx)
        assert closest >= settings.clash_distance_angstrom - 1e-9
        assert all(d <= settings.contact_distance_angstrom + 1e-9 for d in per_copy)
        # Every pair of molecules, not only each copy against the rest, is free of clashes.
        for i in range(n_solvent + 1):
            for j in range(i + 1, n_solvent + 1):
                assert (
                    min_distance(cx.fragment_positions(i), cx.fragment_positions(j)) >= 1.7 - 1e-9
                )
        # Recorded arrangement reproduces the geometry: copy = rotated conformer + translation.
        for copy in range(1, n_solvent + 1):
            t = np.array([cx.arrangement[f"solvent{copy}_t{a}_angstrom"] for a in "xyz"])
            assert np.allclose(cx.fragment_positions(copy).mean(axis=0), t)
            assert np.isclose(
                np.linalg.norm(t), cx.arrangement[f"solvent{copy}_center_distance_angstrom"]
            )
            q = np.array([cx.arrangement[f"solvent{copy}_q{a}"] for a in "wxyz"])
            assert np.isclose(np.linalg.norm(q), 1.0)
        assert cx.arrangement["n_redraws"] >= 0


def test_contact_distances_spread_over_the_window() -> None:
    # Many draws: the closest contact is not pinned to one end of [clash, contact].
    contacts = [
        sample_complex("CO", "O", "methanol|water", k, 0).arrangement[
            "solvent1_min_contact_angstrom"
        ]
        for k in range(30)
    ]
    assert min(contacts) < 2.1 and max(contacts) > 2.6


def test_solid_state_row_becomes_a_dimer_and_charges_are_per_fragment() -> None:
    dimer = sample_complex("c1ccccc1", "c1ccccc1", "benzene|benzene", 0, 0)
    assert dimer.n_atoms == 24 and dimer.n_solvent == 1
    ion = sample_complex("CC(=O)[O-]", "O", "acetate|water", 0, 0, SamplingSettings(n_solvent=2))
    assert ion.charges == [-1, 0, 0] and ion.total_charge == -1 and ion.multiplicity == 1
    radical = sample_complex("[CH3]", "O", "methyl|water", 0, 0)
    assert radical.multiplicity == 2


def test_placement_error_when_no_valid_arrangement(monkeypatch: pytest.MonkeyPatch) -> None:
    # Force every slide to miss (as a degenerate geometry would): after max tries, a clear error.
    monkeypatch.setattr(samples, "_slide_to_contact", lambda *args: None)
    with pytest.raises(PlacementError, match="max_placement_tries"):
        sample_complex("O", "O", "w|w", 0, 0, SamplingSettings(max_placement_tries=5))


def test_settings_from_config_validates_keys_and_values() -> None:
    s = SamplingSettings.from_config(
        {"n_solvent": 4, "clash_distance_angstrom": 2, "per_system": 8}
    )
    assert s.n_solvent == 4 and s.clash_distance_angstrom == 2.0 and s.max_placement_tries == 500
    with pytest.raises(UserError, match="n_solvents"):
        SamplingSettings.from_config({"n_solvents": 2})
    with pytest.raises(UserError, match="contact_distance_angstrom"):
        SamplingSettings.from_config(
            {"clash_distance_angstrom": 3.0, "contact_distance_angstrom": 2.0}
        )
    with pytest.raises(UserError, match="n_solvent"):
        SamplingSettings(n_solvent=0)


def test_cli_writes_extxyz(tmp_path) -> None:
    from ase.io import read

    out = tmp_path / "pw.xyz"
    parser = argparse.ArgumentParser()
    for flag in samples_cli.PARENTS:
        SHARED_FLAGS[flag](parser)
    samples_cli.add_arguments(parser)
    assert "example" in parser.format_help()
    args = parser.parse_args(
        [
            "--solute",
            "c1ccccc1O",
            "--solvent",
            "O",
            "--samples",
            "2",
            "--n-solvent",
            "2",
            "--out",
            str(out),
        ]
    )
    assert samples_cli.run(args) == 0
    frames = read(out, index=":")
    assert len(frames) == 2 and len(frames[0]) == 13 + 2 * 3
    assert list(frames[0].arrays["fragment"][:13]) == [0] * 13
    with pytest.raises(UserError, match="SMILES"):
        samples_cli.run(
            parser.parse_args(["--solute", "C1#CC1", "--solvent", "O", "--out", str(out)])
        )
