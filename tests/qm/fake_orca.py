"""A stand-in ``orca`` executable for tests: replays a real ORCA output instead of computing.

``write_fake_orca(tmp_path, mode, replay=...)`` writes an executable Python script that behaves
like ``orca orca.inp > orca.out``: it copies the input it was given next to itself (so tests can
check what the engine wrote) and prints ``replay`` (a real ORCA output) to stdout. Modes:
``replay`` (the whole output), ``max_cycles`` (the output cut after the last optimization cycle,
ending with ORCA's "did not converge but reached the maximum number of optimization cycles"
message), ``scf_fail`` (cut inside the first cycle, with ORCA's SCF-not-converged abort),
``crash`` (message on stderr, exit code 3), ``hang`` (prints the header, then sleeps).
"""

from __future__ import annotations

import sys
from pathlib import Path

_SCRIPT = r'''#!{python}
import shutil, sys, time
from pathlib import Path
MODE = {mode!r}
REPLAY = {replay!r}
SEEN = {seen!r}
inp = Path(sys.argv[1])
shutil.copyfile(inp, SEEN)
text = Path(REPLAY).read_text() if REPLAY else ""
if MODE == "replay":
    sys.stdout.write(text)
elif MODE == "max_cycles":
    cut = text.index("HURRAY")
    cut = text.rfind("\n", 0, cut)
    sys.stdout.write(text[:cut])
    sys.stdout.write("""
                    The optimization did not converge but reached the maximum
                    number of optimization cycles.
                    Please check your results very carefully.

                             ****ORCA TERMINATED NORMALLY****
""")
elif MODE == "scf_fail":
    cut = text.index("SCF CONVERGED AFTER")
    cut = text.rfind("\n", 0, cut)
    sys.stdout.write(text[:cut])
    sys.stdout.write("""
               *****************************************************
               *                      ERROR                        *
               *           SCF NOT CONVERGED AFTER 125 CYCLES      *
               *****************************************************

This wavefunction IS NOT CONVERGED!
ORCA finished by error termination in SCF
""")
    sys.exit(1)
elif MODE == "crash":
    sys.stderr.write("fake orca: segmentation fault in orca_leanscf\n")
    sys.exit(3)
elif MODE == "hang":
    sys.stdout.write(text[:2000])
    sys.stdout.flush()
    time.sleep(600)
'''


def write_fake_orca(directory: Path, mode: str = "replay", replay: Path | None = None) -> Path:
    """Write the fake binary into ``directory``; the input it receives is copied to ``seen.inp``."""
    script = directory / f"fake_orca_{mode}"
    script.write_text(
        _SCRIPT.format(
            python=sys.executable,
            mode=mode,
            replay=str(replay) if replay else "",
            seen=str(directory / "seen.inp"),
        )
    )
    script.chmod(0o755)
    return script
