"""Physical constants and unit conversions, in one place.

Every quantity that crosses a stage boundary carries its unit in its column name
(``energy_hartree``, ``value`` with a ``unit`` column, ``wall_time_s``); convert
with these factors only.
"""

from __future__ import annotations

# CODATA 2018: 1 Hartree = 27.211386245988 eV. ASE 3.29 still defaults to CODATA 2014
# (27.211386024367243 eV); energies that come back from an ASE calculator in eV are converted with
# ase.units.Hartree in the engine so that they reproduce the engine's own Hartree value exactly.
HARTREE_TO_EV: float = 27.211386245988
EV_TO_HARTREE: float = 1.0 / HARTREE_TO_EV
# 1 Hartree = 627.509474 kcal/mol (CODATA 2018 via Eh·N_A / 4184 J).
HARTREE_TO_KCAL_PER_MOL: float = 627.5094740631
KCAL_PER_MOL_TO_HARTREE: float = 1.0 / HARTREE_TO_KCAL_PER_MOL
BOHR_TO_ANGSTROM: float = 0.529177210903
ANGSTROM_TO_BOHR: float = 1.0 / BOHR_TO_ANGSTROM

# Units of the curated targets, as written in the pair tables' ``unit`` column.
UNIT_NM = "nm"
UNIT_LN_NS = "ln(ns)"
UNIT_KCAL_PER_MOL = "kcal/mol"
