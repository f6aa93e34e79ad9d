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


# The contract as released (main before featviz.v1 grew expressions, photos and the schema);
# every later featviz.v1 must stay wire- and source-compatible with it.
RELEASED_PROTO = "24479c77c65dad84cacefcbc310c3a9d512ca9bd"


def _proto_tree(directory: Path, proto: str) -> Path:
    """A buf module in `directory` holding `proto` as featviz/v1/featviz.proto."""
    (directory / "featviz/v1").mkdir(parents=True)
    (directory / "featviz/v1/featviz.proto").write_text(proto)
    (directory / "buf.yaml").write_text((ROOT / "proto/buf.yaml").read_text())
    return directory


def test_buf_breaking_finds_no_change_against_the_released_contract(tmp_path: Path) -> None:
    released = run("git", "show", f"{RELEASED_PROTO}:proto/featviz/v1/featviz.proto")
    assert released.returncode == 0, released.stderr
    against = _proto_tree(tmp_path / "released", released.stdout)
    check = run(str(BIN / "buf"), "breaking", ".", "--against", str(against), cwd=ROOT / "proto")
    assert check.returncode == 0, check.stdout + check.stderr

    # the check has teeth: renumbering a field of the current contract is reported
    current = (ROOT / "proto/featviz/v1/featviz.proto").read_text()
    broken = _proto_tree(
        tmp_path / "broken", current.replace("string layer = 1;", "string layer = 99;")
    )
    caught = run(str(BIN / "buf"), "breaking", str(broken), "--against", str(against))
    assert caught.returncode != 0 and "MaximizeRequest" in caught.stdout + caught.stderr
