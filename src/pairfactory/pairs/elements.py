"""The elements pairfactory supports, one list for the whole pipeline.

The featurizer one-hot encodes exactly these (``pairfactory.ml.featurize.ELEMENTS`` is this
tuple), and the QM engines cover them (GFN2-xTB: H–Rn; the def2 basis sets of PySCF and ORCA:
H–Rn). Curation rejects a pair with any other element (reason ``unsupported_element``): the model
would see it as an anonymous "other" atom and the QM stage would spend hours on a molecule the
model cannot tell apart. Order: most frequent first in the bundled and configured datasets
(Chromophore, FreeSolv, MNSol, CombiSolv-Exp: 8,873 unique SMILES counted on 2026-11-25); the
order is part of the feature layout, so append, never reorder.
"""

from __future__ import annotations

SUPPORTED_ELEMENTS: tuple[str, ...] = (
    "C",
    "N",
    "O",
    "F",
    "S",
    "Cl",
    "B",
    "Si",
    "Br",
    "P",
    "I",
    "Se",
    "H",
    "Na",
    "Te",
    "Ge",
    "Sn",
)


def unsupported_elements(elements: tuple[str, ...] | frozenset[str]) -> list[str]:
    """The elements of ``elements`` outside SUPPORTED_ELEMENTS, sorted."""
    return sorted(set(elements) - set(SUPPORTED_ELEMENTS))
