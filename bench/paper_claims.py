"""The paper's claims, reproduced at tiny scale on CPU with the product's own recipes.

Writes docs/paper-claims.md: for each claim, what the paper reports, what this run
measured, and whether the *direction* reproduces at this scale. Nothing is tuned until
it does; a direction that does not reproduce is said so.

The setup (seeded, offline, well under 20 minutes on 2 cores):
- teacher: the demo's rule-based instruction follower (demo/prompts.jsonl: 3,000
  prompts with its answers); the student never sees how it works, only its text;
- student: a tiny Qwen2-shaped model built here (`trainer build-tiny`), first trained
  briefly (SFT) on a slice of prompts the distillation never uses, so that it starts
  weak but coherent;
- distillation: `python -m trainer run` on 320 prompts, for SeqKD, GAD (the paper's
  recipe: warmup then the adversarial stage), GAD with the cross-entropy D loss, GAD
  without warmup, and GAD with the frozen (off-policy) discriminator;
- evaluation: greedy answers on 64 held-out prompts (`trainer generate`), the LLM-judge
  protocol of the paper (`trainer.judge`) with a scripted judge, and n-gram overlap F1
  against the teacher (`trainer.score`).

The scripted judge plays GPT-4o: its own reference answer is the teacher's answer, and
it rates an answer 1–10 by its word-level F1 with that reference (a judge that rewards
the teacher's behaviour). It is deterministic, so the numbers move only with the models.

Run: .venv/bin/python bench/paper_claims.py  [--quick: a smaller, faster smoke run]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.judge.scripted import ScriptedJudge, is_verdict, shown_answers  # noqa: E402
from trainer.judge import JudgeItem, judge  # noqa: E402
from trainer.metrics_text import words  # noqa: E402
from trainer.score import score_system  # noqa: E402
from trainer.teacher import TeacherSpec  # noqa: E402

DOC = ROOT / "docs" / "paper-claims.md"
SEED = 0
PY = sys.executable

BASE = {
    "batch_size": 8,
    "group_size": 4,
    "max_prompt_tokens": 64,
    "max_response_tokens": 24,
    "save_every": 10**6,
    "sample_every": 10**6,
    "micro_batch_tokens": 4096,
    "seed": SEED,
    "warmup": {"epochs": 1, "d_only_steps": 3, "lr": 1.0e-3},
    "gad": {"epochs": 3, "lr": 1.0e-4},
    "seqkd": {"epochs": 3, "lr": 1.0e-3},
    "disc": {"lr": 1.0e-4},
    "optim": {"grad_clip": 1.0},
}
VARIANTS = {
    "SeqKD": {"method": "seqkd"},
    "GAD": {"method": "gad"},
    "GAD, cross-entropy D": {"method": "gad", "disc": {"lr": 1.0e-4, "loss": "cross_entropy"}},
    "GAD, no warmup": {
        "method": "gad",
        "warmup": {"epochs": 1, "generator": False, "discriminator": False},
    },
    "GAD, frozen D": {
        "method": "gad",
        "disc": {"lr": 1.0e-4, "update": "frozen"},
    },
}


# ---------------------------------------------------------------------------- data


def _records() -> list[dict]:
    return [json.loads(line) for line in (ROOT / "demo" / "prompts.jsonl").open()]


def _write(path: Path, records: list[dict], answers: bool = True) -> Path:
    with path.open("w") as f:
        for r in records:
            out = {"id": r["id"], "prompt": r["prompt"]}
            if answers:
                out["teacher_response"] = r["teacher_response"]
            f.write(json.dumps(out) + "\n")
    return path


# ---------------------------------------------------------------------------- the product


def _run(args: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with log.open("w") as out:
        done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} failed; see {log}")


def train(name: str, student: Path, prompts: Path, out: Path, overrides: dict) -> Path:
    import yaml

    config = {**BASE, **overrides, "student": str(student), "train_file": str(prompts)}
    config["output_dir"] = str(out)
    path = out.parent / f"{out.name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    _run([PY, "-m", "trainer", "run", "--config", str(path)], out.parent / f"{out.name}.log")
    print(f"  {name}: trained in {time.monotonic() - started:.0f} s", flush=True)
    return out / "final"


def generate(model: Path, prompts: Path, out: Path) -> dict[str, str]:
    _run(
        [PY, "-m", "trainer", "generate", "--model", str(model), "--prompts", str(prompts),
         "--out", str(out), "--greedy", "--max-new-tokens", str(BASE["max_response_tokens"])],
        out.with_suffix(".log"),
    )  # fmt: skip
    return {r["id"]: r["response"] for r in map(json.loads, out.open())}


# ---------------------------------------------------------------------------- the judge


def f1(answer: str, reference: str) -> float:
    a, b = Counter(words(answer)), Counter(words(reference))
    common = sum((a & b).values())
    if not common:
        return 0.0
    p, r = common / sum(a.values()), common / sum(b.values())
    return 2 * p * r / (p + r)


def scripted_judge(teacher_by_prompt: dict[str, str]):
    """The judge's reply: its reference is the teacher's answer; a verdict rates both
    shown answers 1-10 by their F1 with it."""

    def reply(messages: list[dict[str, str]]) -> str:
        question = messages[-1]["content"]
        if not is_verdict(messages):
            return teacher_by_prompt.get(question.strip(), "")
        reference = next((t for p, t in teacher_by_prompt.items() if p in question), "")
        one, two = shown_answers(messages)
        s1, s2 = (round(1 + 9 * f1(a, reference), 1) for a in (one, two))
        return f"{s1} {s2}\nRated by word overlap with the reference answer."

    return reply


def judge_scores(
    items: list[JudgeItem], answers: dict[str, dict[str, str]], teacher_by_prompt: dict[str, str]
) -> dict[str, float | None]:
    from trainer.teacher import AnswerStore

    with ScriptedJudge(scripted_judge(teacher_by_prompt)) as server:
        spec = TeacherSpec(base_url=server.url, model="scripted-judge")
        store = AnswerStore(Path(os.environ["GAD_BENCH_DIR"]) / "judge-cache.sqlite")
        report = asyncio.run(judge(items, answers, spec, store))
    return {s.system: s.mean for s in report.systems}


# ---------------------------------------------------------------------------- lengths


def length_curve(run_dir: Path) -> list[tuple[int, float]]:
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return [(m["step"], m["len/student_mean"]) for m in metrics if m.get("stage") == "gad"]


def thirds(curve: list[tuple[int, float]]) -> tuple[float, float]:
    """Mean answer length in the first and the last third of the adversarial stage."""
    values = [v for _, v in curve]
    k = max(1, len(values) // 3)
    return sum(values[:k]) / k, sum(values[-k:]) / k


# ---------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (not recorded)")
    parser.add_argument("--dir", default=str(ROOT / "var" / "paper-claims"))
    args = parser.parse_args()
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    os.environ["GAD_BENCH_DIR"] = str(work)
    started = time.monotonic()
    records = _records()
    n_train, n_test, n_pre = (40, 12, 80) if args.quick else (320, 64, 480)
    if args.quick:
        BASE.update({"gad": {"epochs": 1, "lr": 1.0e-4}, "seqkd": {"epochs": 1, "lr": 1.0e-3}})
    train_set = _write(work / "train.jsonl", records[:n_train])
    pre_set = _write(work / "pretrain.jsonl", records[1000 : 1000 + n_pre])
    test_records = records[2900 : 2900 + n_test]
    test_set = _write(work / "test.jsonl", test_records, answers=False)
    teacher = {r["id"]: r["teacher_response"] for r in test_records}

    print("building the student and pretraining it on prompts the distillation never uses")
    from trainer.tiny import build_tiny

    texts = work / "texts.txt"
    texts.write_text(
        "".join(f"{r['prompt']}\n{r['teacher_response']}\n" for r in records[1000:2000])
    )
    base = build_tiny(work / "student-base", layers=2, hidden=64, heads=4, vocab=1024, seed=2,
                      texts=texts)  # fmt: skip
    pretrain = {"method": "seqkd", "seqkd": {"epochs": 2 if args.quick else 3, "lr": 3.0e-3}}
    student = train("pretraining", base, pre_set, work / "pretrained", pretrain)

    runs: dict[str, Path] = {}  # variant -> its run directory (final/ inside)
    for name, overrides in VARIANTS.items():
        out = work / name.lower().replace(",", "").replace(" ", "-")
        train(name, student, train_set, out, overrides)
        runs[name] = out

    print("answering the held-out prompts, judging and scoring")
    answers = {"Before distillation": generate(student, test_set, work / "before.jsonl")}
    for name, run_dir in runs.items():
        answers[name] = generate(run_dir / "final", test_set, run_dir / "answers.jsonl")
    items = [JudgeItem(r["id"], [{"role": "user", "content": r["prompt"]}]) for r in test_records]
    by_prompt = {r["prompt"]: r["teacher_response"] for r in test_records}
    judged = judge_scores(items, answers, by_prompt)
    overlap = {name: score_system(name, a, teacher) for name, a in answers.items()}
    curves = {name: length_curve(runs[name]) for name in ("GAD", "GAD, frozen D")}
    elapsed = time.monotonic() - started
    text = render(judged, overlap, curves, n_train, n_test, elapsed, args.quick)
    print(text)
    if not args.quick:
        DOC.write_text(text)
        print(f"written to {DOC.relative_to(ROOT)}")
    return 0


def _verdict(ok: bool) -> str:
    return "**reproduces**" if ok else "**does not reproduce** at this scale"


def _num(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def render(judged, overlap, curves, n_train, n_test, elapsed, quick) -> str:
    gad, seqkd = judged.get("GAD"), judged.get("SeqKD")
    f1_rows = [
        f"| {name} | {_num(judged.get(name))} | "
        + " | ".join(_num(s.ngram_f1.get(n), 3) for n in (1, 2, 3, 4))
        + f" | {_num(s.lengths.mean if s.lengths else None)} |"
        for name, s in overlap.items()
    ]
    copies_more = all(
        (overlap["SeqKD"].ngram_f1.get(n) or 0) > (overlap["GAD"].ngram_f1.get(n) or 0)
        for n in (1, 2, 3, 4)
    )
    bt, ce = judged.get("GAD"), judged.get("GAD, cross-entropy D")
    warm, cold = judged.get("GAD"), judged.get("GAD, no warmup")
    on_first, on_last = thirds(curves["GAD"]) if curves["GAD"] else (None, None)
    off_first, off_last = (
        thirds(curves["GAD, frozen D"]) if curves["GAD, frozen D"] else (None, None)
    )
    off_grows = None not in (off_first, off_last, on_first, on_last) and (
        off_last - off_first > on_last - on_first
    )
    curve_rows = [
        f"| {name} | {', '.join(f'{v:.1f}' for _, v in curve[:: max(1, len(curve) // 8)])} |"
        for name, curve in curves.items()
    ]
    beats = gad is not None and seqkd is not None and gad > seqkd
    lines = [
        "# The paper's claims, reproduced at tiny scale",
        "",
        f"_Measured by `bench/paper_claims.py` ({'quick smoke run' if quick else 'full run'}, "
        f"seed {SEED}) in {elapsed / 60:.1f} min on {os.cpu_count()} CPU cores. Command: "
        "`.venv/bin/python bench/paper_claims.py`._",
        "",
        f"Setup: the demo's rule-based teacher (demo/prompts.jsonl), a tiny Qwen2-shaped "
        f"student pretrained briefly on other prompts, distilled on {n_train} prompts with "
        f"the product's recipes, evaluated greedily on {n_test} held-out prompts. The judge "
        "is scripted (its reference is the teacher's answer; it rates by word overlap with "
        "it), so the judge score measures closeness to the teacher's behaviour on a 0–100 "
        "scale where 50 is as good as the reference. At this scale the numbers say which "
        "way an effect goes, not how large it is on a 14B model.",
        "",
        "## Results",
        "",
        "| system | judge score | F1-1 | F1-2 | F1-3 | F1-4 | mean length (words) |",
        "|---|---|---|---|---|---|---|",
        *f1_rows,
        "",
        "## Claim by claim",
        "",
        "| claim (paper) | paper reports | measured here | direction |",
        "|---|---|---|---|",
        f"| GAD beats SeqKD by the LLM judge (Table 2) | 52.1 vs 50.6 (Qwen2.5-14B, LMSYS) | "
        f"{_num(gad)} vs {_num(seqkd)} | {_verdict(beats)} |",
        "| SeqKD copies more of the teacher's n-grams (Fig. 4) | higher F1 at every n | "
        "F1-1..4 SeqKD "
        + "/".join(_num(overlap["SeqKD"].ngram_f1.get(n), 3) for n in (1, 2, 3, 4))
        + " vs GAD "
        + "/".join(_num(overlap["GAD"].ngram_f1.get(n), 3) for n in (1, 2, 3, 4))
        + f" | {_verdict(copies_more)} |",
        f"| Bradley–Terry D loss beats cross-entropy (Table 4) | 48.9 vs 47.9 | "
        f"{_num(bt)} vs {_num(ce)} | {_verdict(bt is not None and ce is not None and bt > ce)} |",
        f"| Warmup helps (Table 3) | 50.8 vs 49.7 / 49.0 without | {_num(warm)} vs {_num(cold)} "
        f"(no warmup of G nor D) | {_verdict(warm is not None and cold is not None and warm > cold)} |",
        f"| A frozen (off-policy) D is reward-hacked: answers grow (Fig. 6) | ~1300 tokens after "
        f"~300 RL steps; on-policy stable | tokens, first → last third of RL: frozen "
        f"{_num(off_first)} → {_num(off_last)}, on-policy {_num(on_first)} → {_num(on_last)} | "
        f"{_verdict(bool(off_grows))} |",
        "",
        "## Answer length during the adversarial stage (student tokens, every few steps)",
        "",
        "| run | len/student_mean over the RL steps |",
        "|---|---|",
        *curve_rows,
        "",
        "Where a direction does not reproduce, it is left so: the tiny student has a few "
        "hundred thousand parameters, 24-token answers and a few hundred steps, and the "
        "paper's effects are measured on 3B–14B students over thousands of steps.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
