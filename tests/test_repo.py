"""Repository hygiene, checked by the test suite so that CI fails on it: lint, format, stale
generated code, the proto lint, and the README's test command being the one CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_ruff_lint_and_format_are_clean() -> None:
    lint = run(str(BIN / "ruff"), "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run(str(BIN / "ruff"), "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_generated_protobuf_code_is_up_to_date() -> None:
    check = run("bash", "proto/generate.sh", "--check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_buf_lint_passes() -> None:
    lint = run(str(BIN / "buf"), "lint", cwd=ROOT / "proto")
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.+?)\n```", readme)
    ci = (ROOT / ".ci/run").read_text()
    assert any(command in ci for command in commands), "the README's test command is not in .ci/run"
