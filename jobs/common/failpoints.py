"""Crash injection for the reliability tests: a real SIGKILL of this process at a named point.

`CDR_BILLING_KILL_AT=<point>[@<seconds>]` kills the driver when it reaches `<point>` (e.g.
`merge:gold/rated_events`), or that many seconds after, while the write is in flight. Unset in
production, where `kill_at` is one dictionary lookup.
"""
from __future__ import annotations

import os
import signal
import threading

ENV = "CDR_BILLING_KILL_AT"


def kill_at(point: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, delay = spec.partition("@")
    if name != point:
        return
    if delay:
        threading.Timer(float(delay), os.kill, (os.getpid(), signal.SIGKILL)).start()
    else:
        os.kill(os.getpid(), signal.SIGKILL)


def table_point(path: str) -> str:
    """`merge:<layer>/<table>` for a table path, whatever the warehouse root."""
    parts = path.rstrip("/").split("/")
    return f"merge:{'/'.join(parts[-2:])}"
