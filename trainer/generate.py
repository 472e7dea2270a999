"""`python -m trainer generate`: answer a prompt file with a model (evaluation, demos).

Output: one JSON object per input record with the prompt shape of DESIGN.md plus
`response`, `finish_reason` ("stop" | "length") and `usage`. Greedy unless --temperature.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

import torch

from trainer.config import MAX_RESPONSE_TOKENS
from trainer.data import (
    PromptRecord,
    iter_records,
    left_cut,
    render_prompts,
    require_chat_template,
)
from trainer.models import load_causal_lm, load_tokenizer, resolve_device, resolve_dtype
from trainer.rollout import Rollout, SamplingSettings
from trainer.rollout.hf import HFRollout

MAX_PROMPT_TOKENS = 2048


def generate_file(
    model_path: str,
    prompts_path: str,
    out_path: str,
    max_new_tokens: int = MAX_RESPONSE_TOKENS,
    temperature: float | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> int:
    """Stream the prompt file in chunks; write answers in input order; return the count."""
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(model_path, what="model")
    require_chat_template(tokenizer, f"model {model_path!r}")
    device = resolve_device("auto")
    dtype = resolve_dtype("auto", device)
    model = load_causal_lm(model_path, dtype, what="model").to(device).eval()
    settings = SamplingSettings(
        temperature=temperature or 1.0,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
    )
    sampler = HFRollout(model, tokenizer, settings)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as f:
        chunk = []
        for rec in iter_records(prompts_path):
            chunk.append(rec)
            if len(chunk) == batch_size:
                count += _answer(chunk, tokenizer, sampler, temperature is None, f)
                chunk = []
        if chunk:
            count += _answer(chunk, tokenizer, sampler, temperature is None, f)
    os.replace(tmp, out)  # a half-written answers file never looks finished
    return count


def _answer(
    records: list[PromptRecord], tokenizer: Any, sampler: HFRollout, greedy: bool, f: TextIO
) -> int:
    prompts = [
        left_cut(ids, MAX_PROMPT_TOKENS)[0]
        for ids in render_prompts(tokenizer, [r.messages for r in records])
    ]
    rollout: Rollout = sampler.sample(prompts, 1, greedy=greedy)
    eos = tokenizer.eos_token_id
    for rec, prompt, ids, done in zip(
        records, prompts, rollout.responses, rollout.terminated, strict=True
    ):
        answer_ids = ids[:-1] if done and ids and ids[-1] == eos else ids
        row: dict[str, Any] = {"id": rec.id, "messages": rec.messages}
        if rec.teacher_response is not None:
            row["teacher_response"] = rec.teacher_response
        row |= {
            "response": tokenizer.decode(answer_ids, skip_special_tokens=True),
            "finish_reason": "stop" if done else "length",
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(ids)},
        }
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(records)
