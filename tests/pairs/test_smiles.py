"""The one canonicalisation function: canonical output, rejections with RDKit's message, cache."""

from __future__ import annotations

import math

import pytest

from pairfactory.pairs import schema as S
from pairfactory.pairs.smiles import cache_info, canonicalize, canonicalize_many


def test_canonical_and_properties() -> None:
    result = canonicalize("C(O)C")
    assert result.ok and result.canonical == "CCO" and result.reason is None
    assert canonicalize("OCC").canonical == "CCO"
    assert result.formula == "C2H6O" and result.closed_shell_problem() is None


@pytest.mark.parametrize(
    ("smiles", "reason"),
    [
        ("CC(=O)[O-]", S.CHARGED),
        ("[CH3]", S.RADICAL),
        ("CCO.O", S.MULTI_FRAGMENT),
        ("C1CC[S+2](C1)([O-])[O-]", S.CHARGED),
    ],
)
def test_closed_shell_problems(smiles: str, reason: str) -> None:
    problem = canonicalize(smiles).closed_shell_problem()
    assert problem is not None and problem[0] == reason


def test_nitro_group_is_fine() -> None:
    result = canonicalize("C[N+](=O)[O-]")
    assert result.net_charge == 0 and result.closed_shell_problem() is None


@pytest.mark.parametrize(
    ("raw", "reason", "message"),
    [
        ("gas", S.INVALID_SMILES, "syntax error"),
        ("C1CC", S.INVALID_SMILES, "unclosed ring"),
        ("N(C)(C)(C)(C)C", S.INVALID_SMILES, "valence"),
        ("c1cccc1", S.INVALID_SMILES, "kekulize"),
        ("", S.MISSING_SMILES, "empty"),
        ("   ", S.MISSING_SMILES, "empty"),
        (None, S.MISSING_SMILES, "empty"),
        (math.nan, S.MISSING_SMILES, "empty"),
    ],
)
def test_bad_smiles_are_rejections_with_rdkit_message(
    raw, reason: str, message: str, capfd
) -> None:
    result = canonicalize(raw)
    assert not result.ok and result.reason == reason
    assert message in result.detail.lower()
    assert "[" not in result.detail[:1]  # RDKit's timestamp prefix is stripped
    captured = capfd.readouterr()
    assert (
        "SMILES Parse Error" not in captured.err and "valence" not in captured.err
    )  # RDKit kept quiet


def test_each_raw_string_parsed_once() -> None:
    before = cache_info()
    results = canonicalize_many(["CCCCCCCCCN", "CCCCCCCCCN", "NCCCCCCCCC"] * 5)
    after = cache_info()
    assert set(results) == {"CCCCCCCCCN", "NCCCCCCCCC"}
    assert after.misses - before.misses <= 2
    canonicalize("CCCCCCCCCN")
    assert cache_info().hits > after.hits and cache_info().misses == after.misses
