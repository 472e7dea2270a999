"""Prompt files: every shape, problems with line numbers, tokenization, batching."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer import data
from trainer.errors import BadInput

MSGS = [{"role": "user", "content": "hi"}]


def _jsonl(path, lines):
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def test_jsonl_record_shapes(tmp_path):
    path = _jsonl(
        tmp_path / "p.jsonl",
        [
            json.dumps({"prompt": "hello", "id": 7}),
            "",
            json.dumps({"messages": MSGS, "teacher_response": "yo"}),
            json.dumps({"content": MSGS, "response": "collected"}),
        ],
    )
    recs = list(data.iter_records(path))
    assert [r.messages for r in recs] == [[{"role": "user", "content": "hello"}], MSGS, MSGS]
    assert [r.id for r in recs] == ["7", None, None]
    assert [r.teacher_response for r in recs] == [None, "yo", "collected"]
    assert [r.line for r in recs] == [1, 3, 4]


def test_csv_with_header(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        'id,prompt,teacher_response\na,"hello, there",answer\nb,second,\n', encoding="utf-8"
    )
    recs = list(data.iter_records(path))
    assert recs[0].messages[0]["content"] == "hello, there" and recs[0].teacher_response == "answer"
    assert recs[1].teacher_response is None and recs[1].line == 3


def test_byte_order_mark_is_ignored(tmp_path):
    (tmp_path / "p.csv").write_bytes(b"\xef\xbb\xbfprompt\nhello\n")
    (tmp_path / "p.jsonl").write_bytes(b'\xef\xbb\xbf{"prompt": "hello"}\n')
    for name in ("p.csv", "p.jsonl"):
        assert list(data.iter_records(tmp_path / name))[0].messages[0]["content"] == "hello"


def test_csv_messages_column_holds_json(tmp_path):
    path = tmp_path / "p.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        import csv

        w = csv.writer(f)
        w.writerow(["messages"])
        w.writerow([json.dumps(MSGS)])
    assert list(data.iter_records(path))[0].messages == MSGS


def test_parquet(tmp_path):
    path = tmp_path / "p.parquet"
    table = pa.table({"content": [MSGS, MSGS], "teacher_response": ["a", None], "id": ["x", "y"]})
    pq.write_table(table, path)
    recs = list(data.iter_records(path))
    assert [r.messages for r in recs] == [MSGS, MSGS]
    assert [r.teacher_response for r in recs] == ["a", None] and recs[1].line == 2


def test_validation_collects_problems_with_line_numbers(tmp_path):
    path = _jsonl(
        tmp_path / "bad.jsonl",
        [
            json.dumps({"prompt": "ok", "teacher_response": "t"}),
            "{not json",
            json.dumps({"question": "where is the prompt"}),
            json.dumps({"prompt": 3}),
            b"\xff\xfe invalid",
            json.dumps({"messages": [{"role": "user"}]}),
            json.dumps([1, 2]),
        ],
    )
    report = data.validate_prompt_file(path)
    assert report.num_records == 1 and report.num_with_teacher == 1
    lines = [(p.line, p.message) for p in report.problems]
    assert [n for n, _ in lines] == [2, 3, 4, 5, 6, 7]
    assert "not JSON" in lines[0][1] and "no prompt" in lines[1][1]
    assert "must be a string" in lines[2][1] and "invalid UTF-8" in lines[3][1]
    assert "messages[0]" in lines[4][1] and "JSON object" in lines[5][1]


def test_validation_keeps_first_20_problems(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", ["nope"] * 25)
    report = data.validate_prompt_file(path)
    assert len(report.problems) == 20 and report.more_problems == 5 and not report.ok


def test_empty_file_and_missing_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert [str(p) for p in data.validate_prompt_file(empty).problems] == ["empty file: no records"]
    with pytest.raises(BadInput, match="cannot read prompt file .*missing.jsonl"):
        data.validate_prompt_file(tmp_path / "missing.jsonl")


def test_iter_records_stops_at_first_problem_naming_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [json.dumps({"prompt": "a"}), "{"])
    with pytest.raises(BadInput, match=r"p.jsonl: line 2: not JSON"):
        list(data.iter_records(path))


def test_long_prompt_is_cut_from_the_left_keeping_assistant_header(tmp_path, tokenizer):
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    path = _jsonl(
        tmp_path / "p.jsonl",
        [
            json.dumps({"prompt": "the cat " * 200, "teacher_response": "x"}),
            json.dumps({"prompt": "short", "teacher_response": "y"}),
        ],
    )
    examples, stats = data.load_examples(path, tokenizer, 32, 64)
    assert len(examples[0].prompt_ids) == 32 and examples[0].prompt_ids[-len(header) :] == header
    assert len(examples[1].prompt_ids) < 32 and examples[1].prompt_ids[0] == 1  # <|im_start|>
    assert stats.prompts_cut == 1 and stats.num_prompts == 2


def test_teacher_answer_ends_with_eos_and_is_cut_without_it(tmp_path, tokenizer):
    eos = tokenizer.eos_token_id
    path = _jsonl(
        tmp_path / "p.jsonl",
        [
            json.dumps({"prompt": "a", "teacher_response": "the dog"}),
            json.dumps({"prompt": "b", "teacher_response": "the dog runs " * 50}),
        ],
    )
    examples, stats = data.load_examples(path, tokenizer, 64, 16)
    short, long = examples[0].teacher_ids, examples[1].teacher_ids
    assert short[-1] == eos and eos not in short[:-1]
    assert short[:-1] == tokenizer("the dog", add_special_tokens=False)["input_ids"]
    assert len(long) == 16 and eos not in long and stats.teacher_cut == 1


def test_missing_teacher_answer_is_bad_input_when_needed(tmp_path, tokenizer):
    path = _jsonl(tmp_path / "p.jsonl", [json.dumps({"prompt": "a"})])
    with pytest.raises(BadInput, match="line 1: no teacher_response"):
        data.load_examples(path, tokenizer, 64, 16)
    examples, _ = data.load_examples(path, tokenizer, 64, 16, need_teacher=False)
    assert examples[0].teacher_ids is None


def test_tokenizer_without_chat_template_says_how_to_fix(tokenizer):
    class NoTemplate:
        chat_template = None

    with pytest.raises(BadInput, match="chat_template"):
        data.require_chat_template(NoTemplate(), "the student")


def test_token_budget_batches_bound_padded_tokens():
    lengths = [10, 3, 7, 2, 9, 30]
    batches = data.token_budget_batches(lengths, 20)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 20
    assert [5] in batches  # longer than the budget: alone
