"""The one SMILES canonicalisation used by every dataset: RDKit parse + canonical SMILES.

A SMILES that RDKit cannot read becomes a rejection (reason and RDKit's own message), never an
exception, and RDKit's log lines are captured into that message instead of being printed. Each raw
string is parsed once per process (the results are cached by the raw string), because the same
solvent appears in thousands of rows.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pairfactory.errors import UserError
from pairfactory.pairs import schema

# RDKit prefixes each log line with a "[hh:mm:ss] " timestamp; it carries no information here.
_RDKIT_TIMESTAMP = re.compile(r"^\[\d{2}:\d{2}:\d{2}\] ?")


@dataclass(frozen=True)
class SmilesResult:
    """The outcome of canonicalising one raw SMILES string."""

    raw: str | None
    canonical: str | None  # None when the SMILES was rejected
    reason: str | None  # a reject reason code from pairfactory.pairs.schema, None when valid
    detail: str  # RDKit's message on failure, empty when valid
    net_charge: int = 0
    radical_electrons: int = 0
    n_fragments: int = 0
    max_atom_charge: int = (
        0  # largest |formal charge| on one atom (2+ means an odd charge-separated form)
    )
    formula: str = ""  # Hill formula with implicit hydrogens (RDKit CalcMolFormula)
    elements: tuple[str, ...] = ()  # sorted element symbols, implicit hydrogens included

    @property
    def ok(self) -> bool:
        return self.canonical is not None

    @property
    def is_charged(self) -> bool:
        return self.net_charge != 0

    @property
    def is_radical(self) -> bool:
        return self.radical_electrons > 0

    @property
    def is_multi_fragment(self) -> bool:
        return self.n_fragments > 1

    def closed_shell_problem(self) -> tuple[str, str] | None:
        """(reason, detail) if this is not one neutral, closed-shell molecule; None otherwise."""
        if not self.ok:
            return None
        if self.is_multi_fragment:
            return (
                schema.MULTI_FRAGMENT,
                f"{self.canonical} has {self.n_fragments} disconnected fragments",
            )
        if self.is_charged:
            return schema.CHARGED, f"{self.canonical} has net formal charge {self.net_charge:+d}"
        if self.max_atom_charge >= 2:
            # e.g. sulfolane written C1CC[S+2](C1)([O-])[O-]: neutral overall, but no sane neutral
            # molecule needs a doubly charged atom; the graph and QM stages would see the wrong
            # bonds
            return (
                schema.CHARGED,
                f"{self.canonical} has an atom with formal charge of magnitude "
                f"{self.max_atom_charge}",
            )
        if self.is_radical:
            return (
                schema.RADICAL,
                f"{self.canonical} has {self.radical_electrons} unpaired electron(s)",
            )
        return None


def _is_blank(raw: object) -> bool:
    if raw is None:
        return True
    if isinstance(raw, float) and math.isnan(raw):
        return True
    return isinstance(raw, str) and not raw.strip()


@functools.cache
def _canonicalize_str(raw: str) -> SmilesResult:
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdMolDescriptors

    text = raw.strip()
    # BlockLogs keeps RDKit quiet on stderr; CaptureErrorLog keeps its message for the reject
    # detail.
    with rdBase.BlockLogs(), rdBase.CaptureErrorLog() as capture:
        mol = Chem.MolFromSmiles(text)
    if mol is None:
        lines = [_RDKIT_TIMESTAMP.sub("", line).strip() for line in capture.messages.splitlines()]
        message = (
            "; ".join(dict.fromkeys(line for line in lines if line)) or "RDKit returned no molecule"
        )
        return SmilesResult(raw=raw, canonical=None, reason=schema.INVALID_SMILES, detail=message)
    return SmilesResult(
        raw=raw,
        canonical=Chem.MolToSmiles(mol),
        reason=None,
        detail="",
        net_charge=Chem.GetFormalCharge(mol),
        radical_electrons=sum(atom.GetNumRadicalElectrons() for atom in mol.GetAtoms()),
        n_fragments=len(Chem.GetMolFrags(mol)),
        max_atom_charge=max((abs(atom.GetFormalCharge()) for atom in mol.GetAtoms()), default=0),
        formula=rdMolDescriptors.CalcMolFormula(mol),
        elements=tuple(sorted(parse_hill_formula(rdMolDescriptors.CalcMolFormula(mol)))),
    )


def canonicalize(raw: object) -> SmilesResult:
    """Canonicalise one raw SMILES (cached by the raw string); never raises on bad input."""
    if _is_blank(raw):
        return SmilesResult(
            raw=None, canonical=None, reason=schema.MISSING_SMILES, detail="empty SMILES cell"
        )
    if not isinstance(raw, str):
        # a number in a SMILES column (e.g. pandas read "0"): still a string to RDKit, keep it
        # honest
        raw = str(raw)
    return _canonicalize_str(raw)


def canonicalize_many(
    raws: Iterable[object], desc: str = "canonicalising SMILES"
) -> dict[str, SmilesResult]:
    """Canonicalise the distinct strings of ``raws`` (with a progress bar); keys are the raw
    strings."""
    from tqdm import tqdm

    unique = list(dict.fromkeys(r for r in raws if isinstance(r, str)))
    results: dict[str, SmilesResult] = {}
    for raw in tqdm(unique, desc=desc, unit="smiles", leave=False, mininterval=1.0):
        results[raw] = canonicalize(raw)
    return results


def cache_info() -> functools._CacheInfo:
    """Hits/misses of the process-wide SMILES cache (how often RDKit was spared)."""
    return _canonicalize_str.cache_info()


_MNSOL_FORMULA_TOKEN = re.compile(r"([A-Z]+)(\d+)")
_HILL_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*)")


@functools.cache
def molecule_key(smiles: str) -> str | None:
    """The InChIKey of a SMILES without its stereo (None if RDKit or InChI cannot make one): what
    "the same molecule" means where SMILES written by users meet curated ones."""
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            return None
        # stereo-blind, but not isotope-blind: heavy water is another solvent than water
        Chem.RemoveStereochemistry(mol)
        key = Chem.MolToInchiKey(mol)
    return key or None


def readable_molecule_keys(smiles: Iterable[str], named: str) -> dict[str, str]:
    """``molecule_key`` of each SMILES written by a user (key -> the SMILES as written); one that
    RDKit cannot read is an error naming where it was given (``named``, e.g. a flag)."""
    keys: dict[str, str] = {}
    for written in smiles:
        key = molecule_key(written)
        if key is None:
            raise UserError(
                f"solvent {written!r} ({named}) is not a SMILES RDKit can read; write it as in "
                "the pair table, e.g. O for water"
            )
        keys[key] = written
    return keys


def parse_mnsol_formula(formula: str) -> dict[str, int]:
    """Element counts of an MNSol-style formula (``H4C3O1F2CL2``: upper-case symbols, every count
    given)."""
    tokens = _MNSOL_FORMULA_TOKEN.findall(formula)
    if not tokens or "".join(f"{e}{n}" for e, n in tokens) != formula:
        raise ValueError(f"not an MNSol formula: {formula!r}")
    counts: dict[str, int] = {}
    for element, number in tokens:
        symbol = element.capitalize()
        counts[symbol] = counts.get(symbol, 0) + int(number)
    return counts


def parse_hill_formula(formula: str) -> dict[str, int]:
    """Element counts of an RDKit Hill formula (``C3H4Cl2F2O``); charges (``+``/``-``) are
    ignored."""
    counts: dict[str, int] = {}
    for element, number in _HILL_TOKEN.findall(re.sub(r"[+-]\d*$", "", formula)):
        if element:
            counts[element] = counts.get(element, 0) + (int(number) if number else 1)
    return counts
