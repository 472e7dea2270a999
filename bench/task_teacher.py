"""A teacher for bench/paper_claims.py whose answers can be checked by a program, and
that answers each prompt in one of several valid phrasings chosen at random: a
multi-modal teacher, the kind the paper's mode-seeking argument is about.

Tasks (each prompt is one instance, its inputs drawn with a seeded generator):
- ``sort``: sort a list of numbers; ``add``: add two numbers; ``reverse``: a list of
  words in reverse order; ``capital``: name a country's capital (a lookup); ``remove``: a
  list with one item removed (a list edit).

The inputs are sized for a student that sees each number and word as one token (a BPE
tokenizer trained on these texts): single digits to add (81 sums it can learn, where two
numbers up to 20 would be 400 it sees once each), lists of words rather than the letters
of one word (which it cannot see).

Splits draw from disjoint pools: in distribution (ID) uses the first two templates of
each task; out of distribution (OOD) uses the third, never trained on, and, where the
task can still be solved without having seen the answer, longer inputs (sorting and
reversing five items) or unseen entities (removing one of four unseen words). A capital
or a sum cannot be known for unseen entities, so those two change only the template.

The teacher is a black box behind an OpenAI-compatible loopback server (``TeacherServer``):
``POST /v1/chat/completions`` reads the prompt, solves it, and answers in a phrasing
drawn at random (4 per task, 8-16 words). ``correct(task, answer)`` checks any answer,
whatever its phrasing, by the numbers and words it holds.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORDS = ["apple", "river", "garden", "window", "planet", "silver", "rocket", "pencil",
         "forest", "candle", "bridge", "dragon", "castle", "market", "winter", "summer"]  # fmt: skip
WORDS_OOD = ["lantern", "harbour", "meadow", "saffron", "thistle", "walnut", "glacier", "falcon"]
CAPITALS = {"France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
            "Japan": "Tokyo", "Canada": "Ottawa", "Egypt": "Cairo", "Kenya": "Nairobi",
            "Peru": "Lima", "Chile": "Santiago", "Norway": "Oslo", "Sweden": "Stockholm"}  # fmt: skip

# Prompt templates: the ID ones, then the OOD one (never in training).
TEMPLATES = {
    "sort": ["Sort these numbers: {xs}.", "Put {xs} in ascending order.",
             "Arrange the following from smallest to largest: {xs}."],
    "add": ["What is {a} + {b}?", "Add {a} and {b}.", "Compute the sum of {a} and {b}."],
    "reverse": ["Reverse the list {xs}.", "Write {xs} in reverse order.",
                "List these from last to first: {xs}."],
    "capital": ["What is the capital of {c}?", "Name the capital city of {c}.",
                "Which city is the seat of government of {c}?"],
    "remove": ["Remove {x} from the list {xs}.", "Delete {x} from {xs}.",
               "Take {x} out of this list: {xs}."],
}  # fmt: skip
ID_TEMPLATES = 2  # the first two of each task; the third is OOD


@dataclass(frozen=True)
class Task:
    kind: str
    args: tuple[Any, ...]
    prompt: str


def make_task(kind: str, rng: random.Random, ood: bool) -> Task:
    template = TEMPLATES[kind][ID_TEMPLATES if ood else rng.randrange(ID_TEMPLATES)]
    if kind == "sort":
        xs = rng.sample(range(1, 21), 5 if ood else 3)
        return Task(kind, tuple(xs), template.format(xs=", ".join(map(str, xs))))
    if kind == "add":
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        return Task(kind, (a, b), template.format(a=a, b=b))
    if kind == "reverse":
        items = rng.sample(WORDS, 5 if ood else 3)
        return Task(kind, tuple(items), template.format(xs=", ".join(items)))
    if kind == "capital":
        c = rng.choice(sorted(CAPITALS))
        return Task(kind, (c,), template.format(c=c))
    items = rng.sample(WORDS_OOD, 4) if ood else rng.sample(WORDS, 3)
    x = rng.choice(items)
    return Task(kind, (x, *items), template.format(x=x, xs=", ".join(items)))


def solution(task: Task) -> Any:
    if task.kind == "sort":
        return sorted(task.args)
    if task.kind == "add":
        return task.args[0] + task.args[1]
    if task.kind == "reverse":
        return list(task.args[::-1])
    if task.kind == "capital":
        return CAPITALS[task.args[0]]
    x, *items = task.args
    return [i for i in items if i != x]


def phrasings(task: Task) -> list[str]:
    """The valid answers, each 8-16 words: the teacher picks one at random."""
    s = solution(task)
    if task.kind == "sort":
        xs = ", ".join(map(str, s))
        return [f"Sorted from smallest to largest, the numbers are {xs}.",
                f"In ascending order: {xs}. That is the whole list, sorted.",
                f"Here is the list in increasing order: {' then '.join(map(str, s))}.",
                f"The ascending order is {' < '.join(map(str, s))}, smallest number first."]  # fmt: skip
    if task.kind == "add":
        a, b = task.args
        return [f"Adding the two numbers gives {a} + {b} = {s}.",
                f"The sum of {a} and {b} is {s}.",
                f"{a} plus {b} makes {s} in total, so the answer is {s}.",
                f"Add them up and you get {s}."]  # fmt: skip
    if task.kind == "reverse":
        backwards = ", ".join(s)
        return [f"From the last item to the first, the list is {backwards}.",
                f"Reversed, it reads: {backwards}.",
                f"Here it is back to front: {backwards}, the first item now last.",
                f"The reverse order is {backwards}, and nothing else changes."]  # fmt: skip
    if task.kind == "capital":
        c = task.args[0]
        return [f"The capital of {c} is {s}.",
                f"{s} is the capital city of {c}.",
                f"{c} is governed from its capital, {s}.",
                f"Its capital is {s}, the seat of the government of {c}."]  # fmt: skip
    kept = ", ".join(s)
    return [f"Without {task.args[0]}, the list is {kept}.",
            f"After removing it, the list reads: {kept}.",
            f"The remaining items, in their order, are {kept}.",
            f"Here is the edited list: {kept}, with {task.args[0]} gone."]  # fmt: skip


def correct(task: Task, answer: str) -> bool:
    """Whether ``answer``, in any phrasing, holds the right result."""
    s = solution(task)
    if task.kind == "sort":
        numbers = [int(n) for n in re.findall(r"\d+", answer)]
        return numbers[-len(s) :] == s if len(numbers) >= len(s) else False
    if task.kind == "add":
        numbers = [int(n) for n in re.findall(r"\d+", answer)]
        return bool(numbers) and s in numbers and numbers[-1] in (s, *task.args)
    if task.kind == "capital":
        return s.lower() in answer.lower()
    return listed(answer, set(task.args[1:] if task.kind == "remove" else task.args)) == s


def listed(answer: str, items: set[str]) -> list[str]:
    """The list ``answer`` gives: its longest run of ``items`` joined by commas."""
    runs, current, joined = [], [], False
    for token in re.findall(r"[a-z]+|,", answer.lower()):
        if token == ",":
            joined = bool(current)
        elif token in items and (joined or not current):
            current.append(token)
            joined = False
        else:
            runs.append(current)
            current, joined = ([token], False) if token in items else ([], False)
    runs.append(current)
    return max(runs, key=len)


def parse(prompt: str) -> Task | None:
    """The task a prompt asks (the teacher reads it back from its text)."""
    for kind, templates in TEMPLATES.items():
        for template in templates:
            pattern = re.escape(template)
            for name in ("xs", "a", "b", "c", "x"):
                pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>.+?)")
            found = re.fullmatch(pattern, prompt.strip())
            if found is None:
                continue
            g = found.groupdict()
            if kind == "sort":
                return Task(kind, tuple(int(n) for n in g["xs"].split(", ")), prompt)
            if kind == "add":
                return Task(kind, (int(g["a"]), int(g["b"])), prompt)
            if kind == "reverse":
                return Task(kind, tuple(g["xs"].split(", ")), prompt)
            if kind == "capital":
                return Task(kind, (g["c"],), prompt)
            return Task(kind, (g["x"], *g["xs"].split(", ")), prompt)
    return None


class TeacherServer:
    """``POST /v1/chat/completions`` on loopback: the task teacher, answering each
    request in a phrasing drawn at random (seeded). Usage counts words as tokens."""

    def __init__(self, seed: int = 0) -> None:
        rng = random.Random(seed)
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                prompt = body["messages"][-1]["content"]
                task = parse(prompt)
                with lock:
                    text = rng.choice(phrasings(task)) if task else "I cannot answer that."
                reply = {
                    "id": f"chatcmpl-{time.monotonic_ns()}", "object": "chat.completion",
                    "created": int(time.time()), "model": body.get("model", "task-teacher"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": len(prompt.split()),
                              "completion_tokens": len(text.split()),
                              "total_tokens": len(prompt.split()) + len(text.split())},
                }  # fmt: skip
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> TeacherServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
