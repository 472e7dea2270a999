"""Health of the adversarial game: alarm rules as pure functions on metric series.

GAD fails quietly (GAD.md): a discriminator that wins outright gives the student no
signal; one stuck at chance while the student moves is not learning; with an
off-policy (frozen) discriminator the student's answers grow without bound (the
reward hacking of the paper's Fig. 6); a NaN ends everything. Each rule looks at the
recent points of a few series (``[step, value]`` lists in step order; ``None`` is a
non-finite value: the trainer writes NaN and inf as null) and returns an ``Alarm`` that
carries the numbers that triggered it, or None.

Thresholds (``Thresholds``; each overridable by a Django setting named
``GAD_HEALTH_<FIELD IN UPPER CASE>``, e.g. ``GAD_HEALTH_LEN_RATIO = 3.0``):

=====================  =======  ==========================================================
field                  default  meaning
=====================  =======  ==========================================================
window                 150      points per series looked at (the most recent ones; never
                                fewer than the step counts below need)
d_acc_high             0.95     discriminator too strong: d/acc at or above this ...
d_acc_high_steps       50       ... at each of this many consecutive adversarial steps
d_chance_tol           0.05     discriminator not learning: mean d/acc within 0.5 ± this ...
d_chance_steps         100      ... over this many adversarial steps, while the student
moving_kl              0.001    moves: mean g/kl above this, or ...
moving_len_pct         10       ... len/student_mean changed by more than this %
len_ratio              2.0      length runaway: len/student_mean above this × len/teacher_mean
len_ratio_steps        10       ... at each of this many consecutive steps; or ...
len_growth_pct         50       ... len/student_mean grew by more than this % ...
len_growth_steps       100      ... over this many steps (means of the first and last
                                tenth of those steps, so one long batch does not trip it)
=====================  =======  ==========================================================

The discriminator rules look only at adversarial-stage points (``ADVERSARIAL_STAGES``):
in warmup the student learns by SFT and D is not yet its reward. The length and
non-finite rules look at every stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

ADVERSARIAL_STAGES = frozenset({"gad"})
# Rewards and losses (and the grad norms that precede them) whose null means NaN/inf.
WATCHED_FINITE = (
    "reward/mean",
    "reward/std",
    "d/loss",
    "g/pg_loss",
    "g/sft_loss",
    "g/kl",
    "d/grad_norm",
    "g/grad_norm",
)

Series = Sequence[Sequence]  # [[step, value or None], ...] in step order


@dataclass(frozen=True)
class Thresholds:
    window: int = 150
    d_acc_high: float = 0.95
    d_acc_high_steps: int = 50
    d_chance_tol: float = 0.05
    d_chance_steps: int = 100
    moving_kl: float = 0.001
    moving_len_pct: float = 10.0
    len_ratio: float = 2.0
    len_ratio_steps: int = 10
    len_growth_pct: float = 50.0
    len_growth_steps: int = 100

    @property
    def points_needed(self) -> int:
        """How many recent points the rules look at: ``window``, or more if a rule needs it."""
        steps = (self.d_acc_high_steps, self.d_chance_steps, self.len_ratio_steps)
        return max(self.window, *steps, self.len_growth_steps + 1)

    @classmethod
    def from_settings(cls, settings: object) -> Thresholds:
        """Defaults overridden by ``GAD_HEALTH_<FIELD>`` attributes of ``settings``."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"GAD_HEALTH_{f.name.upper()}"
            raw: Any = getattr(settings, name, f.default)
            kind = int if f.type in ("int", int) else float
            try:
                value = kind(raw)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number (got {raw!r})") from None
            if value < (1 if kind is int else 0):
                raise ValueError(f"{name} must be {'at least 1' if kind is int else '>= 0'}")
            values[f.name] = value
        return cls(**values)


@dataclass(frozen=True)
class Alarm:
    code: str  # d_too_strong | d_not_learning | len_runaway | not_finite
    severity: str  # warning | error
    title: str
    evidence: str  # the numbers that triggered it, in words
    advice: str  # what it means, what to look at
    step: int  # the latest step of the evidence
    numbers: dict = field(default_factory=dict)

    @property
    def detail(self) -> str:
        return f"{self.evidence}. {self.advice}"

    def as_dict(self) -> dict:
        return {**asdict(self), "detail": self.detail}


# ----------------------------------------------------------------------------- helpers


def finite(points: Series) -> list[tuple[int, float]]:
    return [(p[0], p[1]) for p in points if p[1] is not None]


def trailing_run(points: Series, ok: Callable[[float], bool]) -> list[tuple[int, float]]:
    """The longest run of points at the end of the series whose values all pass ``ok``."""
    run: list[tuple[int, float]] = []
    for step, value in reversed(points):
        if value is None or not ok(value):
            break
        run.append((step, value))
    run.reverse()
    return run


def in_stages(points: Series, stages: Sequence[Sequence], wanted: frozenset) -> list:
    """The points whose step falls in a stage named in ``wanted``.

    ``stages`` is ``[[first step, stage], ...]`` in step order (the payload's shape).
    """
    out, i = [], -1
    for point in points:
        while i + 1 < len(stages) and stages[i + 1][0] <= point[0]:
            i += 1
        if i >= 0 and stages[i][1] in wanted:
            out.append(point)
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def change_pct(points: Series, over_steps: int | None = None) -> tuple[float, dict] | None:
    """Relative change (%) between the first and the last tenth of the recent points.

    With ``over_steps``, only points of the last ``over_steps`` steps count, and None
    comes back unless the series reaches that far back (no verdict on a short history).
    """
    pts = finite(points)
    if len(pts) < 2:
        return None
    last_step = pts[-1][0]
    if over_steps is not None:
        start = last_step - over_steps
        if pts[0][0] > start:
            return None
        pts = [p for p in pts if p[0] >= start]
    k = max(1, len(pts) // 10)
    before, after = _mean([v for _, v in pts[:k]]), _mean([v for _, v in pts[-k:]])
    if before <= 0:
        return None
    pct = 100.0 * (after - before) / before
    return pct, {"from_step": pts[0][0], "to_step": last_step, "before": before, "after": after}


# ----------------------------------------------------------------------------- rules


def discriminator_too_strong(d_acc: Series, t: Thresholds) -> Alarm | None:
    """d/acc >= d_acc_high at each of the last d_acc_high_steps points."""
    run = trailing_run(d_acc, lambda v: v >= t.d_acc_high)
    if len(run) < t.d_acc_high_steps:
        return None
    mean = _mean([v for _, v in run])
    return Alarm(
        "d_too_strong",
        "warning",
        "Discriminator too strong",
        f"d/acc ≥ {t.d_acc_high:g} at each of the last {len(run)} steps "
        f"({run[0][0]}–{run[-1][0]}; mean {mean:.3f}, latest {run[-1][1]:.3f})",
        "It tells every student answer from the teacher's, so the reward no longer "
        "separates good answers from bad ones.",
        run[-1][0],
        {"steps": len(run), "mean": mean, "latest": run[-1][1], "threshold": t.d_acc_high},
    )


def student_moves(g_kl: Series, len_student: Series, t: Thresholds) -> dict | None:
    """Evidence that the student is changing, or None: KL to the reference, or length."""
    kl = [v for _, v in finite(g_kl)]
    if kl and _mean(kl) > t.moving_kl:
        return {"kl_mean": _mean(kl)}
    change = change_pct(len_student)
    if change is not None and abs(change[0]) > t.moving_len_pct:
        return {"len_change_pct": change[0]}
    return None


def discriminator_not_learning(
    d_acc: Series, g_kl: Series, len_student: Series, t: Thresholds
) -> Alarm | None:
    """Mean d/acc within 0.5 ± d_chance_tol over the last d_chance_steps points, while
    the student moves (over the same steps)."""
    pts = finite(d_acc)[-t.d_chance_steps :]
    if len(pts) < t.d_chance_steps:
        return None
    mean = _mean([v for _, v in pts])
    if abs(mean - 0.5) > t.d_chance_tol:
        return None
    first = pts[0][0]
    moving = student_moves(
        [p for p in g_kl if p[0] >= first], [p for p in len_student if p[0] >= first], t
    )
    if moving is None:
        return None
    why = (
        f"mean g/kl {moving['kl_mean']:.3g}"
        if "kl_mean" in moving
        else f"len/student_mean changed {moving['len_change_pct']:+.0f} %"
    )
    return Alarm(
        "d_not_learning",
        "warning",
        "Discriminator not learning",
        f"d/acc averaged {mean:.3f} (chance is 0.5) over the last {len(pts)} steps "
        f"({first}–{pts[-1][0]}) while the student moved ({why})",
        "The reward is noise; check D's learning rate and that it scores teacher and "
        "student answers at the same position.",
        pts[-1][0],
        {"steps": len(pts), "mean": mean, **moving},
    )


def length_vs_teacher(student: Series, teacher: Series, t: Thresholds) -> dict | None:
    """len/student_mean > len_ratio × len/teacher_mean at each of the last len_ratio_steps."""
    teacher_at = {s: v for s, v in finite(teacher) if v > 0}
    pairs = [[s, v / teacher_at[s]] for s, v in finite(student) if s in teacher_at]
    run = trailing_run(pairs, lambda ratio: ratio > t.len_ratio)
    if len(run) < t.len_ratio_steps:
        return None
    step = run[-1][0]
    student_now = next(v for s, v in reversed(finite(student)) if s == step)
    return {
        "ratio": run[-1][1],
        "steps": len(run),
        "from_step": run[0][0],
        "to_step": step,
        "student": student_now,
        "teacher": teacher_at[step],
    }


def length_growth(student: Series, t: Thresholds) -> dict | None:
    """len/student_mean grew by more than len_growth_pct over the last len_growth_steps."""
    change = change_pct(student, t.len_growth_steps)
    if change is None or change[0] <= t.len_growth_pct:
        return None
    return {"growth_pct": change[0], **change[1]}


def length_runaway(student: Series, teacher: Series, t: Thresholds) -> Alarm | None:
    """Either length rule; the banner gives the numbers of each that fired."""
    ratio, growth = length_vs_teacher(student, teacher, t), length_growth(student, t)
    if ratio is None and growth is None:
        return None
    parts, numbers, step = [], {}, 0
    if ratio is not None:
        parts.append(
            f"len/student_mean {ratio['student']:.0f} is {ratio['ratio']:.1f}× "
            f"len/teacher_mean {ratio['teacher']:.0f} (above {t.len_ratio:g}× for "
            f"{ratio['steps']} steps, {ratio['from_step']}–{ratio['to_step']})"
        )
        numbers["ratio"] = ratio
        step = ratio["to_step"]
    if growth is not None:
        parts.append(
            f"len/student_mean grew {growth['growth_pct']:+.0f} % in "
            f"{growth['to_step'] - growth['from_step']} steps ({growth['before']:.0f} → "
            f"{growth['after']:.0f}, steps {growth['from_step']}–{growth['to_step']})"
        )
        numbers["growth"] = growth
        step = max(step, growth["to_step"])
    return Alarm(
        "len_runaway",
        "error",
        "Student answers running away",
        "; ".join(parts),
        "The student is gaming its reward (the off-policy reward hacking of GAD.md); "
        "its answers drift from the teacher's.",
        step,
        numbers,
    )


def not_finite(series: Mapping[str, Series], names: Sequence[str] = WATCHED_FINITE) -> Alarm | None:
    """Any null (NaN or inf from the trainer) among the recent rewards and losses."""
    bad = {}
    for name in names:
        steps = [p[0] for p in series.get(name, ()) if p[1] is None]
        if steps:
            bad[name] = {"count": len(steps), "first": steps[0], "last": steps[-1]}
    if not bad:
        return None
    parts = [
        f"{name} at {b['count']} step{'s' if b['count'] > 1 else ''} "
        + (f"({b['first']}–{b['last']})" if b["count"] > 1 else f"({b['first']})")
        for name, b in bad.items()
    ]
    return Alarm(
        "not_finite",
        "error",
        "Rewards or losses are not finite",
        "NaN or inf in " + ", ".join(parts),
        "Training has diverged from there on.",
        max(b["last"] for b in bad.values()),
        bad,
    )


def evaluate(
    series: Mapping[str, Series], stages: Sequence[Sequence], t: Thresholds | None = None
) -> list[Alarm]:
    """Every rule on a job's recent points; the alarms that fire, most severe first."""
    t = t or Thresholds()
    recent = {name: list(points)[-t.points_needed :] for name, points in series.items()}
    d_acc = in_stages(recent.get("d/acc", []), stages, ADVERSARIAL_STAGES)
    alarms = [
        not_finite(recent),
        length_runaway(recent.get("len/student_mean", []), recent.get("len/teacher_mean", []), t),
        discriminator_too_strong(d_acc, t),
        discriminator_not_learning(
            d_acc, recent.get("g/kl", []), recent.get("len/student_mean", []), t
        ),
    ]
    return [a for a in alarms if a is not None]


# ----------------------------------------------------------------------------- the guard
# The optional per-job guard pauses or stops a job when the alarms fire. The decision is
# here (pure); ``webapp.jobs.monitor.guard_check`` evaluates a job's alarms for the
# worker's watch loop, and the worker carries the decision out through the job's actions.

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
