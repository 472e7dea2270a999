"""The optional per-job guard: pause or stop a job when the health alarms fire.

``guard_action`` is the decision, pure. ``check`` is what the worker calls from its
watch loop (worker/pipeline.py ``_watch``) every ``GAD_GUARD_CHECK_S`` seconds; it returns a
``Decision`` whose ``message`` goes into the job's log, or None. Carrying the decision
out (SIGTERM to the trainer, which saves a checkpoint; the job's new status) is the
worker's job, through webapp.jobs.actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from webapp.monitoring.health import Alarm

GUARD_CHOICES = ("off", "pause", "stop")


def guard_action(guard: str | None, alarms: Sequence[Alarm]) -> str | None:
    """The guard's action now: "pause" or "stop" when it is set so and an alarm fires.

    ``guard`` is the job's choice: None or "off" (never act), "pause", "stop".
    """
    if guard in (None, "", "off"):
        return None
    if guard not in GUARD_CHOICES:
        raise ValueError(f"guard must be one of {', '.join(GUARD_CHOICES)} (got {guard!r})")
    return guard if alarms else None


@dataclass(frozen=True)
class Decision:
    action: str  # pause | stop
    alarms: tuple[Alarm, ...]

    @property
    def message(self) -> str:
        """One paragraph for the job's log and error: what fired, with its numbers."""
        verb = "Paused" if self.action == "pause" else "Stopped"
        step = max(a.step for a in self.alarms)
        reasons = " ".join(f"{a.title}: {a.detail}" for a in self.alarms)
        return f"{verb} by the health guard at step {step}. {reasons}"


def check(job, guard: str | None) -> Decision | None:
    """Evaluate the job's alarms now (no cache) and decide; for the worker's watch loop."""
    # Imported here: the decision above stays importable without a configured Django.
    from webapp.monitoring.status import job_alarms

    if guard in (None, "", "off"):
        return None  # skip the queries entirely
    alarms = job_alarms(job, use_cache=False)
    action = guard_action(guard, alarms)
    return Decision(action, tuple(alarms)) if action else None
