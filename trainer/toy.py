"""The paper's toy experiment (Section 3.3, Fig. 5), built from trainer.losses.

Teacher: a discretized mixture of two well-separated Gaussians over classes 0..9.
Student: one discretized Gaussian (learnable mean and log-std) that only sees teacher
samples. SeqKD (maximum likelihood, `sft_loss`) spreads over both modes and the gap
between them: mode-covering. GAD (a tabular discriminator trained with
`bradley_terry_loss`; its scores are rewards for `grpo_advantages` + `policy_loss`) puts
its mass on one of the teacher's modes: mode-seeking.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import cast

import torch

from trainer import losses

CLASSES = 10
MODES = (2.0, 7.0)  # far apart: classes 4-5 are a gap the teacher almost never uses
MODE_STD = 0.5


def teacher_probs() -> torch.Tensor:
    k = torch.arange(CLASSES, dtype=torch.float64)
    # MODES is not empty, so the sum is a tensor (never sum()'s start value 0)
    dens = cast(torch.Tensor, sum(torch.exp(-((k - m) ** 2) / (2 * MODE_STD**2)) for m in MODES))
    return (dens / dens.sum()).float()


class Student(torch.nn.Module):
    """p(k) proportional to exp(-(k - mu)^2 / (2 sigma^2)), k = 0..9."""

    # Both students start between the modes, a little nearer one; from the same start
    # SeqKD still ends covering both, so the difference is the objective's, not the init's.
    def __init__(self, mu: float = 3.0, sigma: float = 1.0):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.tensor(mu))
        self.log_sigma = torch.nn.Parameter(torch.tensor(math.log(sigma)))

    def log_probs(self) -> torch.Tensor:
        k = torch.arange(CLASSES, dtype=torch.float32)
        logits = -((k - self.mu) ** 2) / (2 * torch.exp(self.log_sigma) ** 2)
        return torch.log_softmax(logits, dim=0)


@dataclass
class ToyResult:
    teacher: list[float]
    seqkd: list[float]
    gad: list[float]


def train_seqkd(steps: int, gen: torch.Generator, batch: int = 64) -> Student:
    student = Student()
    opt = torch.optim.Adam(student.parameters(), lr=0.05)
    p_t = teacher_probs()
    for _ in range(steps):
        y = torch.multinomial(p_t, batch, replacement=True, generator=gen)
        logp = student.log_probs()[y].unsqueeze(0)  # [1, batch] "tokens"
        loss = losses.sft_loss(logp, torch.ones_like(logp))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student


def train_gad(steps: int, gen: torch.Generator, prompts: int = 16, n: int = 8) -> Student:
    student = Student()
    disc = torch.nn.Parameter(torch.zeros(CLASSES))  # D(k): one score per class
    g_opt = torch.optim.Adam(student.parameters(), lr=0.05)
    d_opt = torch.optim.Adam([disc], lr=0.05)
    p_t = teacher_probs()
    for _ in range(steps):
        y_t = torch.multinomial(p_t, prompts, replacement=True, generator=gen)
        with torch.no_grad():
            p_s = student.log_probs().exp()
        y_s = torch.multinomial(p_s, prompts * n, replacement=True, generator=gen).view(prompts, n)
        # rewards from D before its update, then one step for D, then one for G
        rewards = disc.detach()[y_s]
        advantages = losses.grpo_advantages(rewards)
        d_loss = losses.bradley_terry_loss(disc[y_t], disc[y_s])
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        logp = student.log_probs()[y_s].reshape(-1, 1)  # one-token answers
        pg, _ = losses.policy_loss(
            logp, logp.detach(), advantages.reshape(-1), torch.ones_like(logp)
        )
        g_opt.zero_grad()
        pg.backward()
        g_opt.step()
    return student


def run_toy(steps: int = 300, seed: int = 0) -> ToyResult:
    gen = torch.Generator().manual_seed(seed)
    seqkd = train_seqkd(steps, gen)
    gad = train_gad(steps, gen)
    with torch.no_grad():
        return ToyResult(
            teacher=teacher_probs().tolist(),
            seqkd=seqkd.log_probs().exp().tolist(),
            gad=gad.log_probs().exp().tolist(),
        )


def gap_mass(p: list[float]) -> float:
    """Mass on the classes between the modes, which the teacher leaves (almost) empty."""
    lo, hi = int(MODES[0]) + 2, int(MODES[1]) - 2
    return sum(p[lo : hi + 1])


def mode_mass(p: list[float]) -> float:
    """Largest mass within +-1 class of a single teacher mode."""
    return max(sum(p[int(m) - 1 : int(m) + 2]) for m in MODES)


def format_result(r: ToyResult) -> str:
    lines = ["class   " + " ".join(f"{k:>5d}" for k in range(CLASSES))]
    for name in ("teacher", "seqkd", "gad"):
        p = getattr(r, name)
        lines.append(f"{name:<8}" + " ".join(f"{x:5.2f}" for x in p))
    lines.append(
        f"gap mass (classes 4-5): teacher {gap_mass(r.teacher):.2f}, "
        f"SeqKD {gap_mass(r.seqkd):.2f} (mode-covering), GAD {gap_mass(r.gad):.2f}"
    )
    lines.append(
        f"mass on one teacher mode (+-1): SeqKD {mode_mass(r.seqkd):.2f}, "
        f"GAD {mode_mass(r.gad):.2f} (mode-seeking)"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- plotting


def write_png(path: str, r: ToyResult) -> None:
    """Bar charts (teacher grey, SeqKD blue, GAD red), side by side per class.

    Uses matplotlib when installed; otherwise a dependency-free PNG (zlib) without text.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _write_plain_png(path, r)
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    k = torch.arange(CLASSES).tolist()
    for i, (name, color) in enumerate(
        (("teacher", "grey"), ("seqkd", "tab:blue"), ("gad", "tab:red"))
    ):
        ax.bar(
            [x + (i - 1) * 0.27 for x in k], getattr(r, name), width=0.27, color=color, label=name
        )
    ax.set_xticks(k)
    ax.set_xlabel("class")
    ax.set_ylabel("probability")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write_plain_png(path: str, r: ToyResult, width: int = 600, height: int = 300) -> None:
    white, colors = (255, 255, 255), ((150, 150, 150), (31, 119, 180), (214, 39, 40))
    pixels = [[white] * width for _ in range(height)]
    top = max(max(r.teacher), max(r.seqkd), max(r.gad))
    slot = width // CLASSES
    bar = slot // 4
    for k in range(CLASSES):
        for i, (p, color) in enumerate(zip((r.teacher, r.seqkd, r.gad), colors, strict=True)):
            h = int((height - 20) * p[k] / top)
            x0 = k * slot + bar // 2 + i * bar
            for y in range(height - 10 - h, height - 10):
                for x in range(x0, x0 + bar - 1):
                    pixels[y][x] = color
    for x in range(width):  # baseline
        pixels[height - 10][x] = (0, 0, 0)
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header))
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main(steps: int = 300, seed: int = 0, plot: str | None = None) -> int:
    result = run_toy(steps, seed)
    print(format_result(result))
    if plot:
        write_png(plot, result)
        print(f"plot written to {plot} (bars per class: teacher grey, SeqKD blue, GAD red)")
    return 0
