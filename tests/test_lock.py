"""The lock (uv.lock) holds what pyproject.toml asks for, and the two sets exported from it
(requirements/cpu.txt: `make setup` and CI; requirements/gpu.txt: GPU nodes) are what it
resolves to. All offline: uv checks a lock against pyproject.toml without the registry."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UV = str(Path(sys.executable).parent / "uv")


def uv(*args: str, cwd: Path = ROOT, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [UV, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "UV_CACHE_DIR": str(cache), "UV_OFFLINE": "1"},
    )  # fmt: skip


def exported(makefile: str, target: str) -> list[str]:
    """The `uv export` arguments `make lock` writes ``target`` with."""
    flags = re.search(r"^EXPORT_FLAGS := (.*)$", makefile, re.M)
    line = next(x for x in makefile.splitlines() if x.rstrip().endswith(f"-o {target}"))
    args = line.split("uv ", 1)[1].replace("$(EXPORT_FLAGS)", flags.group(1) if flags else "")
    return args.split()


def test_the_lock_is_current_with_pyproject(tmp_path):
    done = uv("lock", "--check", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr + "\nrun `make lock` after editing pyproject.toml"


def test_a_requirement_edited_without_relocking_is_caught(tmp_path):
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    text = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text.replace('"tqdm>=4.66,<5"', '"tqdm>=4.67,<5"'))
    done = uv("lock", "--check", cwd=tmp_path, cache=tmp_path / "cache")
    assert done.returncode != 0


def test_the_committed_sets_are_what_the_lock_exports(tmp_path):
    makefile = (ROOT / "Makefile").read_text()
    for target in ("requirements/cpu.txt", "requirements/gpu.txt"):
        args = exported(makefile, target)
        args[args.index("-o") + 1] = str(tmp_path / "out.txt")
        done = uv(*args, cache=tmp_path / "cache")
        assert done.returncode == 0, done.stderr
        fresh = (tmp_path / "out.txt").read_text().split("\n", 2)[2]  # past the header
        assert (ROOT / target).read_text().split("\n", 2)[2] == fresh, f"run `make lock` ({target})"


def test_the_cpu_set_is_the_gpu_sets_torch_and_transformers():
    """CI installs the CPU set; the GPU set differs by vLLM and CUDA's packages, not by
    the torch or transformers release the trainer is tested with."""

    def pins(target: str) -> dict[str, str]:
        lines = (ROOT / target).read_text().splitlines()
        found = (re.match(r"^([A-Za-z0-9_.-]+)==([^ ;]+)", x) for x in lines)
        return {m.group(1).lower(): m.group(2) for m in found if m}

    cpu, gpu = pins("requirements/cpu.txt"), pins("requirements/gpu.txt")
    assert "vllm" in gpu and "vllm" not in cpu
    for name in ("torch", "transformers", "tokenizers", "accelerate", "peft", "numpy"):
        assert cpu[name] == gpu[name], name
    assert "pytest" in cpu and "pytest" not in gpu
