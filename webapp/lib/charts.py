"""The job page's charts: which metrics (names from GAD.md, "What to log") go together.

Metrics of one chart share a unit and a scale. A metric the trainer writes that no
chart names goes to "Other metrics", so nothing logged is hidden.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    metrics: tuple[str, ...]
    help: str = ""


CHARTS = (
    Chart(
        "disc",
        "Discriminator loss and accuracy",
        ("d/loss", "d/acc"),
        "d/acc near 1 for long: D wins outright; near 0.5 while G moves: D is not learning.",
    ),
    Chart(
        "scores", "Discriminator score: teacher vs student", ("d/teacher_score", "d/student_score")
    ),
    Chart("reward", "Reward", ("reward/mean", "reward/std")),
    Chart("gloss", "Generator loss", ("g/pg_loss", "g/sft_loss")),
    Chart("kl", "KL to the reference", ("g/kl",)),
    Chart("entropy", "Entropy", ("g/entropy",)),
    Chart("clip", "Clip fraction", ("g/clip_frac",)),
    Chart("grad", "Grad norm: G and D", ("g/grad_norm", "d/grad_norm")),
    Chart(
        "length",
        "Answer length (tokens)",
        ("len/student_mean", "len/student_max", "len/teacher_mean"),
        "Student length running far above the teacher's is the reward hacking of GAD.md.",
    ),
    Chart("truncated", "Truncated answers (fraction)", ("len/truncated_frac",)),
    Chart("steptime", "Step time (s)", ("perf/step_s", "perf/rollout_s")),
    Chart("throughput", "Throughput (tokens/s)", ("perf/tokens_per_s",)),
    Chart("lr", "Learning rate", ("g/lr", "d/lr")),
)
OTHER = Chart("other", "Other metrics", ())


def chart_config() -> list[dict]:
    """For the page's script (json_script): every chart, "other" last."""
    return [asdict(c) for c in (*CHARTS, OTHER)]
