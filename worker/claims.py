"""The one claim-renewal thread of the worker.

A job, an evaluation's generation and a judge run are each held by one worker through a
claim on their row that lapses unless renewed. ``Renewal`` renews it every few seconds
from a thread of its own, whatever the work is doing (a teacher call, a training step),
and remembers when the claim was lost, so the work can stop at its next check.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection


class LostClaim(Exception):
    """Another worker took the work over (our claim lapsed): stop, write nothing."""


class Renewal(threading.Thread):
    """Calls ``renew()`` every ``every_s`` seconds until stopped.

    ``renew()`` returns False once the claim is lost (or the work should stop, e.g. a
    job's cancel); the thread then sets ``lost`` and ends.
    """

    def __init__(self, renew: Callable[[], bool], every_s: float, name: str):
        super().__init__(daemon=True, name=name)
        self.renew = renew
        self.every_s = every_s
        self.lost = False
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.wait(self.every_s):
                if not self.renew():
                    self.lost = True
                    return
        finally:
            connection.close()  # the thread's own database connection

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=10)

    def check(self) -> None:
        if self.lost:
            raise LostClaim()
