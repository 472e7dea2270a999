"""`python -m trainer judge` and `score`: tables, reports, exit codes.

In-process through `trainer.cli.main` (as tests/trainer/test_cli.py does) except the
end-to-end test, which runs generate, judge and score as subprocesses against a real
`transformers serve`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.judge.scripted import QualityJudge, SamplingProxy, ScriptedJudge

ROOT = Path(__file__).resolve().parents[2]


def trainer(*args: str, env: dict | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `python -m trainer ARGS`, run in this process."""
    from trainer.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def prompt(i: int) -> str:
    return f"Question {i}: say something."


@pytest.fixture
def files(tmp_path):
    """A 3-prompt test set, two systems' answers (generate's shape), teacher answers."""
    prompts = write_jsonl(tmp_path / "test.jsonl", [{"id": f"p{i}", "prompt": prompt(i)} for i in range(3)])  # fmt: skip

    def answers(name: str, q: int) -> Path:
        rows = [
            {
                "id": f"p{i}",
                "messages": [{"role": "user", "content": prompt(i)}],
                "response": f"the answer of {name} q={q}",
                "finish_reason": "stop",
            }
            for i in range(3)
        ]
        return write_jsonl(tmp_path / f"{name}.jsonl", rows)

    teacher = write_jsonl(
        tmp_path / "teacher.jsonl",
        [{"id": f"p{i}", "prompt": prompt(i), "response": "the answer of gad q=7"} for i in range(3)],
    )  # fmt: skip
    return {"prompts": prompts, "gad": answers("gad", 7), "seqkd": answers("seqkd", 5),
            "teacher": teacher, "dir": tmp_path}  # fmt: skip


def judge_args(files, url: str, *extra: str) -> list[str]:
    return [
        "judge",
        "--prompts",
        str(files["prompts"]),
        "--answers",
        str(files["gad"]),
        "--answers",
        f"SeqKD={files['seqkd']}",
        "--base-url",
        url,
        "--model",
        "judge-model",
        "--cache",
        str(files["dir"] / "cache.sqlite"),
        *extra,
    ]


def test_judge_prints_the_table_and_writes_the_report(files, capsys):
    out = files["dir"] / "report.json"
    with ScriptedJudge(QualityJudge()) as server:
        code, stdout, stderr = cli(capsys, *judge_args(files, server.url, "--out", str(out)))
        again = cli(capsys, *judge_args(files, server.url))
    assert code == 0, stderr
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("system"))
    for column in ("judge score [95% CI]", "mean length", "failures", "disagreements"):
        assert column in header
    gad = next(line for line in lines if line.startswith("gad "))
    assert "58.3 [58.3, 58.3]" in gad  # 100·7/12 in both orders
    seqkd = next(line for line in lines if line.startswith("SeqKD "))
    assert "50.0 [50.0, 50.0]" in seqkd
    assert "15 judge calls (3 reference answers + 12 verdicts; 0 cached)" in stdout
    report = json.loads(out.read_text())
    assert [s["system"] for s in report["systems"]] == ["gad", "SeqKD"]
    assert report["systems"][0]["n_scored"] == 3 and report["summary"]["requested"] == 15
    assert len(report["items"]) == 6 and report["test_set"] == "test"
    # The second run is served from the cache.
    assert again[0] == 0 and "0 asked" in again[1]
    assert server.requests == 15


def test_judge_401_exits_2_naming_the_key_without_leaking_it(files, capsys, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-leak-me")
    with ScriptedJudge(QualityJudge(), schedule=lambda n, h: "401") as server:
        code, stdout, stderr = cli(
            capsys,
            *judge_args(files, server.url, "--api-key-env", "JUDGE_KEY", "--concurrency", "1"),
        )
    assert code == 2
    assert "judge stopped the run" in stderr and "401" in stderr
    assert "$JUDGE_KEY" in stderr
    assert "sk-leak-me" not in stderr + stdout
    assert server.requests == 1


@pytest.mark.parametrize(
    "change,message",
    [
        ({"--prompts": "missing.jsonl"}, "missing.jsonl does not exist"),
        ({"--answers": "nowhere.jsonl"}, "cannot read answers file nowhere.jsonl"),
        ({"--api-key-env": "NO_SUCH_VAR_X"}, "NO_SUCH_VAR_X is not set"),
        ({"--base-url": "ftp://x"}, "--base-url"),
    ],
)
def test_judge_bad_arguments_exit_2(files, capsys, change, message):
    args = judge_args(files, "http://127.0.0.1:9/v1")
    for flag, value in change.items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    code, _, stderr = cli(capsys, *args)
    assert code == 2, stderr
    assert message in stderr


def test_judge_answers_that_match_no_prompt_exit_2_saying_how_many_matched(files, capsys):
    other = write_jsonl(files["dir"] / "other.jsonl", [{"id": "x1", "response": "hi"}])
    args = judge_args(files, "http://127.0.0.1:9/v1")
    args[args.index(str(files["gad"]))] = str(other)
    code, _, stderr = cli(capsys, *args)
    assert code == 2
    assert "other.jsonl" in stderr and "0 matched" in stderr


@pytest.mark.parametrize(
    "rows,message",
    [
        ([{"prompt": "no id"}], "line 1: no 'id'"),
        ([{"id": "p0", "prompt": "a"}, {"id": "p0", "prompt": "b"}], "already on line 1"),
    ],
)
def test_judge_test_prompts_need_unique_ids(files, capsys, rows, message):
    write_jsonl(files["prompts"], rows)
    code, _, stderr = cli(capsys, *judge_args(files, "http://127.0.0.1:9/v1"))
    assert code == 2 and message in stderr
    assert str(files["prompts"]) in stderr


def test_answers_file_problems_name_the_line(files, capsys):
    files["gad"].write_text('{"id": "p0", "response": "ok"}\n{not json\n')
    code, _, stderr = cli(capsys, *judge_args(files, "http://127.0.0.1:9/v1"))
    assert code == 2 and "gad.jsonl: line 2: not JSON" in stderr
    write_jsonl(files["gad"], [{"id": "p0", "messages": [{"role": "user", "content": "other"}],
                                "response": "x"}])  # fmt: skip
    code, _, stderr = cli(capsys, *judge_args(files, "http://127.0.0.1:9/v1"))
    assert code == 2 and "answers another prompt" in stderr


def test_score_prints_lengths_overlap_and_distinct(files, capsys):
    out = files["dir"] / "score.json"
    code, stdout, stderr = cli(
        capsys,
        "score",
        "--answers",
        str(files["gad"]),
        "--answers",
        f"SeqKD={files['seqkd']}",
        "--reference",
        str(files["teacher"]),
        "--out",
        str(out),
    )
    assert code == 0, stderr
    for column in ("lengths (whitespace tokens)", "median", "p95", "distinct-1", "distinct-2",
                   "F1-1", "F1-6", "ROUGE-L"):  # fmt: skip
        assert column in stdout
    report = {s["system"]: s for s in json.loads(out.read_text())["systems"]}
    gad, seqkd = report["gad"], report["SeqKD"]
    assert gad["ngram_f1"]["1"] == 1.0 and gad["rouge_l"] == 1.0  # same text as the teacher
    # words(): "the answer of seqkd q = 5" vs "the answer of gad q = 7": 5 of 7 match
    assert seqkd["ngram_f1"]["1"] == pytest.approx(5 / 7)
    assert seqkd["ngram_f1"]["2"] == pytest.approx(3 / 6)  # "the answer", "answer of", "q ="
    # ROUGE's tokens drop "=": "the answer of seqkd q 5" vs "... gad q 7": 4 of 6 in order
    assert seqkd["rouge_l"] == pytest.approx(4 / 6)
    assert seqkd["ngram_f1"]["6"] == 0.0
    assert gad["lengths"] == {"n": 3, "mean": 5.0, "median": 5.0, "p95": 5.0}
    # 3 identical answers of 7 words: 7 unique unigrams of 21
    assert gad["distinct"]["1"] == pytest.approx(7 / 21)
    assert "reference (teacher)" in report


def test_score_without_a_match_exits_2(files, capsys):
    other = write_jsonl(files["dir"] / "other.jsonl", [{"id": "x1", "response": "hi"}])
    code, _, stderr = cli(
        capsys, "score", "--answers", str(other), "--reference", str(files["teacher"])
    )
    assert code == 2 and "0 matched" in stderr


@pytest.mark.slow
def test_end_to_end_generate_judge_and_score_with_a_tiny_served_model(
    teacher_server, tiny_teacher_dir, files
):
    url, model = teacher_server
    generated = files["dir"] / "tiny.jsonl"
    gen = trainer(
        "generate",
        "--model",
        str(tiny_teacher_dir),
        "--prompts",
        str(files["prompts"]),
        "--out",
        str(generated),
        "--greedy",
        "--max-new-tokens",
        "8",
    )
    assert gen.returncode == 0, gen.stderr
    out = files["dir"] / "report.json"
    with SamplingProxy(url) as proxy:
        args = [
            "judge",
            "--prompts",
            str(files["prompts"]),
            "--answers",
            str(generated),
            "--answers",
            str(files["seqkd"]),
            "--base-url",
            proxy.url,
            "--model",
            model,
            "--max-tokens",
            "8",
            "--verdict-max-tokens",
            "8",
            "--temperature",
            "1.0",  # 0 would switch sampling off again
            "--cache",
            str(files["dir"] / "cache.sqlite"),
            "--out",
            str(out),
        ]
        result = trainer(*args, timeout=300)
        asked = proxy.requests
        rerun = trainer(*args[:-2], timeout=300)  # without --out: the report stays
    # A random model writes no scores: the run stops after its first 8 verdicts (each
    # retried once), says so, and exits 1, instead of paying for all 12 and their retries.
    assert result.returncode == 1, result.stderr
    assert "the judge's replies could not be read (8 of its first 8 verdicts" in result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("system"))
    assert "judge score [95% CI]" in header and "failures" in header
    rows = [line for line in lines if line.startswith(("tiny ", "seqkd "))]
    assert len(rows) == 2 and all("—" in row for row in rows)
    report = json.loads(out.read_text())
    for system in report["systems"]:
        # Every answer is a counted failure or not judged, none a zero.
        assert system["n_answers"] == 3 and system["n_scored"] == 0
        assert system["n_failures"] == 2 and system["n_unjudged"] == 1
        assert system["mean"] is None
    assert all(item["score"] is None and item["reason"] for item in report["items"])
    summary = report["summary"]
    assert summary["references"] == 3 and summary["failed"] == 0
    assert summary["stopped"] == "unreadable" and summary["unreadable"] == 8
    assert summary["unreadable_example"]
    # 12 verdicts were needed; the 8 of the probe were asked, each retried exactly once.
    assert summary["verdicts"] == 12 and summary["nudges"] == 8
    assert summary["requested"] == asked == 3 + 8 + 8
    assert any("unreadable verdict" in item["reason"] for item in report["items"])
    assert summary["tokens"] > 0
    assert rerun.returncode == 1 and "0 asked" in rerun.stdout
    assert proxy.requests == asked  # the rerun was served from the cache

    score = trainer(
        "score",
        "--answers",
        str(generated),
        "--answers",
        str(files["seqkd"]),
        "--reference",
        str(files["teacher"]),
    )
    assert score.returncode == 0, score.stderr
    assert "lengths (whitespace tokens)" in score.stdout and "F1-6" in score.stdout
    assert "tiny" in score.stdout and "seqkd" in score.stdout


@pytest.mark.slow
def test_score_counts_lengths_in_a_given_tokenizer(tiny_teacher_dir, files, capsys):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    expected = len(tok("the answer of gad q=7", add_special_tokens=False)["input_ids"])
    out = files["dir"] / "score.json"
    code, stdout, stderr = cli(
        capsys, "score", "--answers", str(files["gad"]), "--tokenizer", str(tiny_teacher_dir),
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    assert "answer lengths (tokens)" in stdout and "F1-1" not in stdout  # no reference
    lengths = json.loads(out.read_text())["systems"][0]["lengths"]
    assert lengths["mean"] == expected != 5  # not the 5 whitespace tokens
