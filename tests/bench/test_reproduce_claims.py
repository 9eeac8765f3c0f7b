"""bench/reproduce.py --claim: processes sharing one job list claim each fold before running it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_fold_held_by_a_live_process_is_skipped_and_a_dead_ones_claim_is_taken_over(
    tmp_path: Path, bench_script: Callable[[str], ModuleType]
) -> None:
    reproduce = bench_script("reproduce")
    host = socket.gethostname()
    out = tmp_path / "freesolv_cgib" / "cigin" / "random_r0_f0"
    claim = out.with_name(out.name + ".claim")

    assert reproduce.claim_fold(out)
    assert claim.read_text() == f"{host} {os.getpid()}\n"
    assert reproduce.claim_fold(out), "this process's own claim is still its own"
    reproduce.release_fold(out)
    assert not claim.exists()

    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            claim.write_text(f"{host} {live.pid}\n")
            assert not reproduce.claim_fold(out)
            assert claim.read_text() == f"{host} {live.pid}\n", "a live claim is left alone"
        finally:
            live.kill()

    claim.write_text(f"{host} {_dead_pid()}\n")
    assert reproduce.claim_fold(out), "a killed process's claim is stale"
    assert claim.read_text() == f"{host} {os.getpid()}\n"

    claim.write_text("another-host 1\n")
    assert not reproduce.claim_fold(out), "another host's process cannot be checked: live"


def _claim_and_hold(reproduce, out, start, hold, results) -> None:  # noqa: ANN001
    import time

    alive = reproduce._holder_alive

    def slow_alive(text: str) -> bool:
        time.sleep(0.2)  # widens the window between reading a claim and replacing it
        return alive(text)

    reproduce._holder_alive = slow_alive
    start.wait()
    results.put(reproduce.claim_fold(out))
    hold.wait()  # stay alive until all have tried: a won claim must stay live


def test_of_processes_meeting_one_stale_claim_exactly_one_takes_it(
    tmp_path: Path, bench_script: Callable[[str], ModuleType]
) -> None:
    import multiprocessing

    reproduce = bench_script("reproduce")
    out = tmp_path / "ds" / "model" / "random" / "r0-f0"
    out.parent.mkdir(parents=True)
    out.with_name(out.name + ".claim").write_text(f"{socket.gethostname()} {_dead_pid()}\n")
    context = multiprocessing.get_context("fork")
    n = 6
    start, hold, results = context.Barrier(n), context.Barrier(n), context.Queue()
    workers = [
        context.Process(target=_claim_and_hold, args=(reproduce, out, start, hold, results))
        for _ in range(n)
    ]
    for worker in workers:
        worker.start()
    won = [results.get(timeout=60) for _ in range(n)]
    for worker in workers:
        worker.join(timeout=60)
    assert sum(won) == 1
