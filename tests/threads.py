"""Races inside one driver: threads released together, as two runs started at once."""
from __future__ import annotations

import threading
from typing import Callable


def run_together(action: Callable[[], None], threads: int = 2) -> list[str]:
    """Runs `action` in `threads` threads that start at the same moment; what they raised, as text."""
    errors, start = [], threading.Barrier(threads)

    def contend() -> None:
        start.wait()
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - returned for the caller's assertion
            errors.append(repr(exc)[:500])

    running = [threading.Thread(target=contend) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    return errors
