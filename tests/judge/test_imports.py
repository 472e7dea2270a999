"""The evaluation modules load without torch: the web app and the judge worker import
them, and a judge or score run on a machine without a GPU stack must stay cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "module",
    [
        "trainer.judge",
        "trainer.score",
        "trainer.teacher",
        "trainer.config",
        "trainer.data",
        "trainer.metrics_text",
        "trainer.cli_eval",
    ],
)
def test_module_imports_without_loading_torch(module):
    code = f"import {module}, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
