"""A scripted judge: the teacher tests' FaultProxy answering by itself, with text chosen
by a function of the request, so judge tests go through the real openai client path.

`QualityJudge` is the reply function most tests use: answers carry their quality as a
tag ("q=7"), the judge's own reference answer is "q=5", and the judge reads the tags
back as scores, optionally favouring whichever answer it is shown first (position bias).
`garbage` is a judge that cannot judge (the demo's tiny teacher), `verbose` one that
pads every reply far past what the forecast expects.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable

from tests.teacher.faultproxy import FaultProxy
from trainer.judge import JUDGE_SYSTEM, NUDGE

Reply = Callable[[list[dict[str, str]]], str]

REFERENCE = "the judge's own answer q=5"


class ScriptedJudge(FaultProxy):
    """FaultProxy(upstream=None) whose answer text is ``reply(messages)``.

    Each answer reports 10 prompt and 3 completion tokens; with ``counted``, the
    tokens of its texts instead (4 characters a token, the completion cut at the
    request's ``max_tokens``, as a real server cuts it).
    """

    def __init__(self, reply: Reply, counted: bool = False, **kw):
        super().__init__(None, **kw)
        self.reply = reply
        self.counted = counted
        # The handler writes headers and body separately: without NODELAY (inherited by
        # accepted sockets on Linux) each answer waits ~40 ms for a delayed ACK.
        self.server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _answer(self, body: bytes) -> tuple[int, dict]:
        request = json.loads(body)
        text = self.reply(request["messages"])
        usage = {"prompt_tokens": 10, "completion_tokens": 3}
        if self.counted:
            cut = request.get("max_tokens") or len(text)
            text = text[: 4 * cut]
            usage = {
                "prompt_tokens": sum(len(m["content"]) for m in request["messages"]) // 4,
                "completion_tokens": len(text) // 4,
            }
        return 200, {
            "id": "scripted",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": {**usage, "total_tokens": sum(usage.values())},
        }


def is_verdict(messages: list[dict[str, str]]) -> bool:
    return messages[0]["content"] == JUDGE_SYSTEM


def is_nudged(messages: list[dict[str, str]]) -> bool:
    return messages[-1]["content"].endswith(NUDGE)


def shown_answers(messages: list[dict[str, str]]) -> tuple[str, str]:
    """The texts shown as Assistant 1 and Assistant 2 in a verdict prompt."""
    text = messages[-1]["content"]
    one = re.search(r"Assistant 1's Answer\]\n(.*?)\n\[The End of Assistant 1", text, re.S)
    two = re.search(r"Assistant 2's Answer\]\n(.*?)\n\[The End of Assistant 2", text, re.S)
    assert one and two, text
    return one.group(1), two.group(1)


def quality(answer: str) -> float:
    return float(re.search(r"q=([\d.]+)", answer).group(1))


class QualityJudge:
    """Scores = the answers' q tags; Assistant 1 gets ``bias`` extra points."""

    def __init__(self, bias: float = 0.0, unreadable: Callable[[str, bool], bool] | None = None):
        self.bias = bias
        # unreadable(question text, nudged) -> True: reply with something unparseable
        self.unreadable = unreadable or (lambda question, nudged: False)

    def __call__(self, messages: list[dict[str, str]]) -> str:
        if not is_verdict(messages):
            return REFERENCE
        if self.unreadable(messages[-1]["content"], is_nudged(messages)):
            return "Both answers are fine, I think."
        first, second = shown_answers(messages)
        return f"{quality(first) + self.bias:g} {quality(second):g}\nAn explanation."


def garbage(reply: str) -> Reply:
    """Reference answers as `QualityJudge`'s; every verdict is ``reply`` (no scores)."""
    return lambda messages: reply if is_verdict(messages) else REFERENCE


def verbose(judge: Reply) -> Reply:
    """``judge``'s replies, each padded with 10,000 characters (cut at max_tokens by a
    ``counted`` ScriptedJudge)."""
    return lambda messages: judge(messages) + " and so on" * 1000


class SamplingProxy(FaultProxy):
    """Forwards to a real `transformers serve`, asking it to sample.

    A random tiny model decoded greedily writes only newlines, so the judge would have
    no reference answer to compare with and never reach a verdict. transformers serve
    reads a `generation_config` field from the request body (not part of the OpenAI API):
    with sampling on, the model writes random text, which the judge run must then count
    as unreadable verdicts.
    """

    def _answer(self, body: bytes) -> tuple[int, dict]:
        request = json.loads(body)
        request["generation_config"] = json.dumps({"do_sample": True})
        return super()._answer(json.dumps(request).encode())
