"""Fixtures for the trainer tests: one tiny offline model per session."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The trainer must work from a plain checkout too (the venv may not have `pip install -e .`).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two
    spinning OpenMP threads make a step up to 50x slower. Subprocesses get OMP_NUM_THREADS."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """One random-init tiny Qwen2 model + BPE tokenizer for the whole session (read-only)."""
    from trainer.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "model", layers=2, hidden=32, heads=4)


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def write_prompts(path: Path, n: int = 4, teacher: bool = True) -> Path:
    """A JSONL prompt file in the three record shapes, with short teacher answers."""
    import json

    shapes = [
        lambda i: {"prompt": f"what is {i} + {i} ?"},
        lambda i: {"messages": [{"role": "user", "content": f"tell a story about cat {i}"}]},
        lambda i: {"content": [{"role": "user", "content": f"why is the sky blue {i}"}]},
    ]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            rec = {"id": f"p{i}", **shapes[i % 3](i)}
            if teacher:
                rec["teacher_response"] = f"the answer is {i} and the dog runs"
            f.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    return write_prompts(tmp_path / "prompts.jsonl")
