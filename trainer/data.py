"""Prompt files: streaming parser with line-numbered problems, tokenization, batching.

Shapes accepted (DESIGN.md "Prompt files"): JSONL, CSV with a header, Parquet. A record has
`messages` (list of {role, content}), or `prompt` (string -> one user turn), or `content`
(list of messages); optionally `teacher_response` (or `response`, as a collected file has
it) and `id`. The web app reuses `validate_prompt_file` for upload checks.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import BadInput

MAX_PROBLEMS = 20
# Parquet rows per batch: what one batch may expand to stays bounded (64 cells at the
# most a cell may hold), and memory flat on big files.
_READ_CHUNK = 64
# Bounds on what a file may make us hold or store: an id fits the site's column; a Parquet
# file (compressed, dictionary-encoded) cannot expand into more rows, or a bigger cell, or
# more bytes than these, however small it is on disk; a JSON line cannot hold more text or
# more objects and lists than these (one 20 MB line of nested empty objects took 558 MB
# as Python objects).
MAX_ID_CHARS = 200
MAX_CELL_CHARS = 1_000_000
MAX_PARQUET_ROWS = 5_000_000
MAX_PARQUET_BYTES = 4 * 10**9  # uncompressed
MAX_BATCH_BYTES = 256 * 2**20  # what one batch of _READ_CHUNK rows may expand to
MAX_LINE_BYTES = 16 * 2**20
MAX_LINE_CONTAINERS = 100_000


@dataclass
class PromptRecord:
    messages: list[dict[str, str]]
    teacher_response: str | None = None
    id: str | None = None
    line: int = 0  # 1-based line (JSONL, CSV) or row (Parquet) in the file


@dataclass
class Problem:
    line: int | None  # None: the file as a whole
    message: str

    def __str__(self) -> str:
        return self.message if self.line is None else f"line {self.line}: {self.message}"


@dataclass
class ValidationReport:
    num_records: int = 0
    num_with_teacher: int = 0
    problems: list[Problem] = field(default_factory=list)
    more_problems: int = 0  # problems found past the first MAX_PROBLEMS

    @property
    def ok(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------------------- parsing


def _normalize(obj: Any, csv_row: bool = False) -> PromptRecord | str:
    """Turn one parsed object into a PromptRecord, or return the problem as text."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if obj.get("messages") not in (None, ""):
        messages = _messages(obj["messages"], "messages", csv_row)
    elif obj.get("prompt") not in (None, ""):
        if not isinstance(obj["prompt"], str):
            return f"'prompt' must be a string, got {type(obj['prompt']).__name__}"
        messages = [{"role": "user", "content": obj["prompt"]}]
    elif obj.get("content") not in (None, ""):
        messages = _messages(obj["content"], "content", csv_row)
    else:
        return "no prompt: expected a 'messages', 'prompt' or 'content' field"
    if isinstance(messages, str):
        return messages
    teacher = obj.get("teacher_response")
    if teacher in (None, ""):
        teacher = obj.get("response")
    if teacher == "" or _is_nan(teacher):
        teacher = None
    if teacher is not None and not isinstance(teacher, str):
        return f"'teacher_response' must be a string, got {type(teacher).__name__}"
    rid = obj.get("id")
    rid = None if rid in (None, "") or _is_nan(rid) else str(rid)
    if rid is not None and len(rid) > MAX_ID_CHARS:
        return f"'id' is longer than {MAX_ID_CHARS} characters; use a shorter id"
    texts = [m[key] for m in messages for key in ("role", "content")] + [teacher or "", rid or ""]
    if any("\x00" in text for text in texts):
        return "contains a NUL character (\\u0000); remove it"
    if any(len(text) > MAX_CELL_CHARS for text in texts):
        return f"a text is longer than {MAX_CELL_CHARS:,} characters"
    return PromptRecord(messages=messages, teacher_response=teacher, id=rid)


def _not_json(e: ValueError | RecursionError) -> str:
    """Why a line (or a cell) is not usable JSON, briefly."""
    if isinstance(e, json.JSONDecodeError):
        return f"not JSON ({e.msg})"
    if isinstance(e, RecursionError):
        return "not usable JSON (nested too deeply)"
    return f"not usable JSON ({str(e).split(';')[0]})"  # e.g. a number of 5,000 digits


def _is_nan(x: Any) -> bool:
    return isinstance(x, float) and x != x


def _messages(value: Any, name: str, csv_row: bool) -> list[dict[str, str]] | str:
    if csv_row and isinstance(value, str):  # CSV cells hold the list as JSON text
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return f"'{name}' is not a JSON list of messages"
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    if not isinstance(value, list) or not value:
        return f"'{name}' must be a non-empty list of {{role, content}} objects"
    out = []
    for i, m in enumerate(value):
        ok = isinstance(m, dict) and isinstance(m.get("role"), str)
        if not ok or not isinstance(m.get("content"), str):
            return f"'{name}[{i}]' must be an object with string 'role' and 'content'"
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _lines(f: io.BufferedReader, limit: int) -> Iterator[bytes | None]:
    """The file's lines; None for one longer than ``limit`` bytes (read past in chunks,
    never held whole)."""
    while raw := f.readline(limit + 1):
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw
            continue
        while (rest := f.readline(limit)) and not rest.endswith(b"\n"):
            pass
        yield None


def _containers(raw: bytes) -> int:
    """The objects and lists a JSON line holds (brackets outside strings). Counted only
    when the brackets anywhere are too many: a prompt of code may hold many in its text."""
    rough = raw.count(b"{") + raw.count(b"[")
    if rough <= MAX_LINE_CONTAINERS:
        return rough
    count, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            count += 1
    return count


def _jsonl_objects(f: io.BufferedReader) -> Iterator[tuple[int, Any | Problem]]:
    for lineno, raw in enumerate(_lines(f, MAX_LINE_BYTES), start=1):
        if raw is None:
            yield lineno, Problem(lineno, f"longer than {MAX_LINE_BYTES // 2**20} MB; shorten it")
            continue
        try:
            text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # Excel writes a BOM
        except UnicodeDecodeError:
            yield lineno, Problem(lineno, "invalid UTF-8")
            continue
        if not text.strip():
            continue
        if _containers(raw) > MAX_LINE_CONTAINERS:
            yield (
                lineno,
                Problem(
                    lineno,
                    f"more than {MAX_LINE_CONTAINERS:,} JSON objects and lists on one line; a "
                    "record needs a few",
                ),
            )
            continue
        try:
            yield lineno, json.loads(text)
        except (ValueError, RecursionError) as e:
            yield lineno, Problem(lineno, _not_json(e))


def _csv_objects(f: io.BufferedReader) -> Iterator[tuple[int, Any | Problem]]:
    bad_lines: list[int] = []

    def lines() -> Iterator[str]:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError:
                bad_lines.append(lineno)
                yield raw.decode("utf-8", errors="replace")

    reader = csv.DictReader(lines())
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            limit = csv.field_size_limit()
            why = (
                f"a cell is longer than {limit:,} characters" if "field limit" in str(e) else str(e)
            )
            # line_num counts the lines parsed so far: the failing one is the next.
            yield reader.line_num + 1, Problem(reader.line_num + 1, why)
            continue
        if bad_lines:
            yield bad_lines[0], Problem(bad_lines.pop(0), "invalid UTF-8")
            bad_lines.clear()
            continue
        if None in row:  # more cells than header columns
            yield reader.line_num, Problem(reader.line_num, "more cells than header columns")
            continue
        yield reader.line_num, {"__csv__": True, **row}


def _expanded(array: Any) -> tuple[int, int]:
    """(bytes, longest text in characters) of what ``array`` becomes as Python values,
    without making them: a dictionary-encoded column is its indices and one copy of each
    value, and one 2 MB value on 1,024 rows becomes 2 GB once expanded."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        parts = [_expanded(chunk) for chunk in array.chunks]
        return sum(p[0] for p in parts), max((p[1] for p in parts), default=0)
    if isinstance(array, pa.DictionaryArray):
        per_row = _text_lengths(array.dictionary)
        if per_row is None:
            return array.nbytes, 0
        size, chars = per_row
        taken_size, taken_chars = size.take(array.indices), chars.take(array.indices)
        return int(pc.sum(taken_size).as_py() or 0), int(pc.max(taken_chars).as_py() or 0)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        return _expanded(array.flatten())
    if pa.types.is_struct(array.type):
        parts = [_expanded(field) for field in array.flatten()]
        return sum(p[0] for p in parts), max((p[1] for p in parts), default=0)
    per_row = _text_lengths(array)
    if per_row is None:
        return array.nbytes, 0
    return int(pc.sum(per_row[0]).as_py() or 0), int(pc.max(per_row[1]).as_py() or 0)


def _text_lengths(array: Any) -> tuple[Any, Any] | None:
    """(bytes, characters) of each value of a string or binary array; None for others."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return pc.binary_length(array), pc.utf8_length(array)
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        lengths = pc.binary_length(array)
        return lengths, lengths
    return None


def _parquet_objects(path: Path) -> Iterator[tuple[int, Any | Problem]]:
    import pyarrow.parquet as pq

    try:
        texts = [c.path for c in pq.ParquetFile(path).schema if c.physical_type == "BYTE_ARRAY"]
        # Text columns stay dictionary-encoded while a batch's size is checked.
        pf = pq.ParquetFile(path, read_dictionary=texts)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        yield 0, Problem(None, f"not a readable Parquet file ({e})")
        return
    meta = pf.metadata
    declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if meta.num_rows > MAX_PARQUET_ROWS or declared > MAX_PARQUET_BYTES:
        yield (
            0,
            Problem(
                None,
                f"too large: {meta.num_rows:,} rows, {declared / 1e9:.1f} GB uncompressed (at most "
                f"{MAX_PARQUET_ROWS:,} rows and {MAX_PARQUET_BYTES / 1e9:.0f} GB); split the file",
            ),
        )
        return
    row, read = 0, 0
    try:
        for batch in pf.iter_batches(batch_size=_READ_CHUNK):
            # The metadata could understate: count what the rows really expand to, before
            # they are expanded.
            parts = [_expanded(column) for column in batch.columns]
            size, longest = sum(p[0] for p in parts), max((p[1] for p in parts), default=0)
            read += size
            too_big = None
            if longest > MAX_CELL_CHARS:
                too_big = f"a text is longer than {MAX_CELL_CHARS:,} characters"
            elif size > MAX_BATCH_BYTES:
                too_big = (
                    f"{batch.num_rows} rows from here expand to {size / 2**20:,.0f} MB (at "
                    f"most {MAX_BATCH_BYTES // 2**20} MB); shorten the texts"
                )
            elif read > MAX_PARQUET_BYTES:
                too_big = f"the file expands past {MAX_PARQUET_BYTES / 1e9:.0f} GB; split it"
            if too_big is not None:
                yield row + 1, Problem(row + 1, too_big)
                return
            for obj in batch.to_pylist():
                row += 1
                yield row, obj
    except Exception as e:  # pyarrow raises several types for a corrupt page
        yield row + 1, Problem(row + 1, f"not a readable Parquet file ({type(e).__name__})")


def iter_raw(path: str | Path) -> Iterator[PromptRecord | Problem]:
    """Stream a prompt file: yield each record or each problem, in file order."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; parquet reopens by path
    except OSError as e:
        raise BadInput(f"cannot read prompt file {path}: {e.strerror or e}") from e
    with f:
        if suffix == ".parquet":
            objects = _parquet_objects(path)
        elif suffix == ".csv":
            objects = _csv_objects(f)
        else:
            objects = _jsonl_objects(f)
        seen = 0
        for lineno, obj in objects:
            seen += 1
            if isinstance(obj, Problem):
                yield obj
                continue
            is_csv = isinstance(obj, dict) and obj.pop("__csv__", False)
            rec = _normalize(obj, csv_row=bool(is_csv))
            if isinstance(rec, str):
                yield Problem(lineno, rec)
            else:
                rec.line = lineno
                yield rec
        if seen == 0:
            yield Problem(None, "empty file: no records")


def iter_records(path: str | Path) -> Iterator[PromptRecord]:
    """Stream valid records; raise BadInput naming the file and line at the first problem."""
    for item in iter_raw(path):
        if isinstance(item, Problem):
            raise BadInput(f"prompt file {path}: {item}")
        yield item


def validate_prompt_file(
    path: str | Path,
    max_problems: int = MAX_PROBLEMS,
    on_progress: Callable[[int], None] | None = None,
    every: int = 5000,
) -> ValidationReport:
    """Read the whole file (streaming) and collect the first `max_problems` problems;
    ``on_progress(records read)`` is called every ``every`` records."""
    report = ValidationReport()
    for _ in _checked(path, report, max_problems, on_progress, every):
        pass
    return report


def _checked(
    path: str | Path,
    report: ValidationReport,
    max_problems: int,
    on_progress: Callable[[int], None] | None,
    every: int,
) -> Iterator[PromptRecord]:
    """The file's valid records, counting them and its problems into ``report``."""
    for seen, item in enumerate(iter_raw(path), start=1):
        if on_progress is not None and seen % every == 0:
            on_progress(seen)
        if isinstance(item, Problem):
            if len(report.problems) < max_problems:
                report.problems.append(item)
            else:
                report.more_problems += 1
            continue
        report.num_records += 1
        report.num_with_teacher += item.teacher_response is not None
        yield item


def stored_bytes(record: PromptRecord) -> int:
    """What a record holds once stored: its messages twice (as structured JSON and as
    plain text for search), its teacher answer and its id, in UTF-8 bytes. A storage
    quota charges this, not the file's size: a small compressed file may hold far more."""
    texts = [m[key] for m in record.messages for key in ("role", "content")]
    size = 2 * sum(len(text.encode()) for text in texts)
    return size + len((record.teacher_response or "").encode()) + len((record.id or "").encode())


def normalize_prompt_file(
    path: str | Path,
    out: str | Path,
    max_problems: int = MAX_PROBLEMS,
    on_progress: Callable[[int], None] | None = None,
    every: int = 5000,
) -> tuple[ValidationReport, int]:
    """Read the whole file (streaming), like ``validate_prompt_file``, and write its
    records to ``out`` as JSON lines (``messages``, ``teacher_response``, ``id``,
    ``line``): what an importer stores, parsed once. Returns the report and the bytes the
    records hold (``stored_bytes``); ``out`` is removed when the file has problems."""
    report, size = ValidationReport(), 0
    with open(out, "w", encoding="utf-8") as f:
        for item in _checked(path, report, max_problems, on_progress, every):
            size += stored_bytes(item)
            if not report.problems:
                f.write(json.dumps(dataclasses.asdict(item), ensure_ascii=False) + "\n")
    if report.problems:
        Path(out).unlink(missing_ok=True)
    return report, size


# ---------------------------------------------------------------------------- tokenization


@dataclass
class Example:
    """One training prompt, tokenized with the student's tokenizer."""

    prompt_ids: list[int]
    teacher_ids: list[int] | None
    id: str | None = None
    line: int = 0


@dataclass
class EncodeStats:
    num_prompts: int = 0
    prompts_cut: int = 0  # prompts longer than max_prompt_tokens, cut from the left
    teacher_cut: int = 0  # teacher answers longer than max_response_tokens, cut (no EOS)

    def summary(self) -> str:
        return (
            f"{self.num_prompts} prompts; {self.prompts_cut} cut from the left to fit "
            f"max_prompt_tokens; {self.teacher_cut} teacher answers cut to max_response_tokens"
        )


def require_chat_template(tokenizer: Any, where: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise BadInput(
            f"the tokenizer of {where} has no chat template, so prompts cannot be rendered. "
            "Give it one: add a 'chat_template' entry to its tokenizer_config.json (or a "
            "chat_template.jinja file next to it), e.g. copied from the instruct version of "
            "the model, or use an instruct/chat model."
        )


def render_prompts(tokenizer: Any, chats: list[list[dict[str, str]]]) -> list[list[int]]:
    """Chat template with the assistant header appended; special tokens come from the text."""
    texts = [
        tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in chats
    ]
    ids: list[list[int]] = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return ids


def left_cut(ids: list[int], max_tokens: int) -> tuple[list[int], bool]:
    """Keep the last `max_tokens` ids: the end of the chat and the assistant header survive."""
    return (ids[-max_tokens:], True) if len(ids) > max_tokens else (ids, False)


def encode_teacher(
    tokenizer: Any, texts: list[str], max_tokens: int
) -> list[tuple[list[int], bool]]:
    """Teacher answers without special tokens, terminated by EOS, cut to `max_tokens`.

    A cut answer loses its EOS, exactly like a student sample cut at the same length, so D
    scores both at their last kept token.
    """
    if not texts:  # transformers 5 fails on an empty batch
        return []
    eos = tokenizer.eos_token_id
    out = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids = list(ids) + [eos]
        out.append((ids[:max_tokens], True) if len(ids) > max_tokens else (ids, False))
    return out


def load_examples(
    path: str | Path,
    tokenizer: Any,
    max_prompt_tokens: int,
    max_response_tokens: int,
    need_teacher: bool = True,
    chunk: int = 256,
) -> tuple[list[Example], EncodeStats]:
    """Parse, render and tokenize a prompt file in chunks (the file is never fully in memory)."""
    require_chat_template(tokenizer, "the student")
    examples: list[Example] = []
    stats = EncodeStats()
    pending: list[PromptRecord] = []

    def flush() -> None:
        prompts = render_prompts(tokenizer, [r.messages for r in pending])
        teachers: list[tuple[list[int], bool] | None] = [None] * len(pending)
        with_teacher = {
            i: r.teacher_response for i, r in enumerate(pending) if r.teacher_response is not None
        }
        encoded = encode_teacher(tokenizer, list(with_teacher.values()), max_response_tokens)
        for i, enc in zip(with_teacher, encoded, strict=True):
            teachers[i] = enc
        for rec, ids, teacher in zip(pending, prompts, teachers, strict=True):
            ids, cut = left_cut(list(ids), max_prompt_tokens)
            stats.prompts_cut += cut
            stats.teacher_cut += bool(teacher and teacher[1])
            t_ids = teacher[0] if teacher else None
            examples.append(Example(ids, t_ids, rec.id, rec.line))
        stats.num_prompts += len(pending)
        pending.clear()

    for rec in iter_records(path):
        if need_teacher and rec.teacher_response is None:
            raise BadInput(
                f"prompt file {path}: line {rec.line}: no teacher_response; collect the "
                "teacher's answers first (python -m trainer collect) or add the field"
            )
        pending.append(rec)
        if len(pending) >= chunk:
            flush()
    if pending:
        flush()
    return examples, stats


def token_budget_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Group indices so that rows x longest row <= max_tokens (padded tokens per forward).

    Sorting by length keeps padding low; a row longer than the budget goes alone. Bounding
    padded tokens, not rows, is what keeps peak activation memory flat as batches grow.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        new_longest = max(longest, lengths[i])
        if current and new_longest * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, new_longest = [], lengths[i]
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches
