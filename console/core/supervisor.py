"""The children `manage.py up` runs (web, jobs worker, serving worker), kept running: a child that exits
is restarted after a backoff (1, 2, 4, 8 s) while the others go on; the fifth exit of one child within a
minute means it cannot stay up, and the supervisor gives up naming the child and how it ended."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from django.conf import settings

STOP_TIMEOUT_S = 30.0
CRASH_WINDOW_S = 60.0
MAX_CRASHES = 5  # within CRASH_WINDOW_S: give up
BACKOFF_S = (1.0, 2.0, 4.0, 8.0)  # before the restart after the 1st, 2nd, ... crash within the window


def _die_with_parent() -> None:
    """Runs in the child before exec: if `up` itself is killed, the child gets SIGTERM (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class GaveUp(Exception):
    """A child crashed MAX_CRASHES times within CRASH_WINDOW_S."""


class Child:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str]):
        self.name, self.cmd, self.env = name, cmd, env
        self.crashes: list[float] = []  # monotonic times of its exits within the window
        self.restart_at: float | None = None  # set while it waits out its backoff
        self.start()

    def start(self) -> None:
        # Own session: a terminal's Ctrl-C reaches only `up`, which then stops each child in order.
        self.proc = subprocess.Popen(self.cmd, cwd=settings.BASE_DIR, env=self.env, start_new_session=True,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def how_it_ended(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"

    def _kill_group(self) -> None:
        """Whatever is left of its process group (e.g. Celery pool processes)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)

    def check(self, now: float, say: Callable[[str], None]) -> None:
        """Restart it if its backoff is over; if it has just exited, schedule the restart or give up."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restart_at = None
                self.start()
                say(f"Restarted the {self.name} process (pid {self.proc.pid}).")
            return
        if self.proc.poll() is None:
            return
        ended = self.how_it_ended()
        self._kill_group()
        self.crashes = [t for t in self.crashes if now - t < CRASH_WINDOW_S] + [now]
        if len(self.crashes) >= MAX_CRASHES:
            raise GaveUp(f"The {self.name} process {ended}, its {len(self.crashes)}th exit within "
                         f"{CRASH_WINDOW_S:.0f} s; it cannot stay up, so everything stops. "
                         f"Its command was: {' '.join(self.cmd)}")
        delay = BACKOFF_S[min(len(self.crashes), len(BACKOFF_S)) - 1]
        self.restart_at = now + delay
        say(f"The {self.name} process {ended}; restarting it in {delay:g} s "
            f"(exit {len(self.crashes)} of {MAX_CRASHES} allowed within {CRASH_WINDOW_S:.0f} s).")


def check_all(children: list[Child], say: Callable[[str], None]) -> None:
    now = time.monotonic()
    for child in children:
        child.check(now, say)
