"""The `featviz` command end to end: a real subprocess against a real server on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from conftest import TOKEN
from PIL import Image
from serverproc import ServerProcess


def featviz(
    *args: str, target: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `featviz ARGS` (FEATVIZ_TARGET set to `target`) and capture its output."""
    return subprocess.run(
        _command(*args),
        env=_env(target, env),
        capture_output=True,
        text=True,
        timeout=180,
    )


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "featviz.cli", *args]


def _env(target: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATVIZ_")}
    return {**env, **({"FEATVIZ_TARGET": target} if target else {}), **(extra or {})}


def _rows(stdout: str) -> list[dict[str, str]]:
    """The result table printed on stdout: one dict per image."""
    header, *lines = stdout.strip().splitlines()
    return [dict(zip(header.split(), line.split(), strict=True)) for line in lines]


def _assert_one_clear_line(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("featviz"), stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


@pytest.mark.parametrize(
    ("layer", "channel", "steps"), [("block1_conv2", 14, 24), ("block5_conv2", 410, 16)]
)
def test_canonical_examples_write_a_png_and_report_a_positive_activation(
    server: ServerProcess, tmp_path: Path, layer: str, channel: int, steps: int
) -> None:
    out = tmp_path / "out.png"
    args = ("maximize", layer, str(channel), "--size", "64", "--steps", str(steps), "-o", str(out))
    done = featviz(*args, target=server.target)
    assert done.returncode == 0, done.stderr
    (row,) = _rows(done.stdout)
    assert (row["channel"], row["file"]) == (str(channel), str(out))
    assert float(row["activation"]) > 0 and float(row["robust"]) > 0
    assert 0 <= float(row["saturated"].rstrip("%")) <= 100
    with Image.open(out) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 64))
    assert f"| {steps}/{steps} steps" in done.stderr  # the progress bar reached the end
    assert "Traceback" not in done.stderr


def test_many_channels_go_to_a_directory_or_a_contact_sheet(
    server: ServerProcess, tmp_path: Path
) -> None:
    common = ("maximize", "block1_conv2", "0-2,7", "--size", "32", "--steps", "4", "-q")
    done = featviz(*common, "-o", str(tmp_path / "pngs"), target=server.target)
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (tmp_path / "pngs").iterdir())
    assert names == [f"block1_conv2_{c}.png" for c in (0, 1, 2, 7)]
    assert [row["channel"] for row in _rows(done.stdout)] == ["0", "1", "2", "7"]
    for path in (tmp_path / "pngs").iterdir():
        with Image.open(path) as image:
            assert image.size == (32, 32)

    sheet = tmp_path / "sheet.png"
    done = featviz(*common, "--sheet", "-o", str(sheet), target=server.target)
    assert done.returncode == 0, done.stderr
    with Image.open(sheet) as image:
        assert image.width >= 2 * 32 and image.height >= 2 * 32  # a grid of four 32-px images
    assert {row["file"] for row in _rows(done.stdout)} == {str(sheet)}


def test_describe_prints_the_layer_table_and_json(server: ServerProcess) -> None:
    table = featviz("describe", target=server.target)
    assert table.returncode == 0, table.stderr
    assert "14,714,688" in table.stdout
    block5_conv2 = next(line for line in table.stdout.splitlines() if "block5_conv2" in line)
    assert block5_conv2.split()[1:4] == ["conv", "14x14x512", "2,359,808"]

    described = featviz("describe", "--json", "--size", "96", target=server.target)
    assert described.returncode == 0, described.stderr
    description = json.loads(described.stdout)
    assert description["total_parameters"] == 14_714_688
    assert description["input_size"] == 96
    layers = {layer["name"]: layer for layer in description["layers"]}
    assert layers["block1_conv2"]["parameters"] == 36_928
    assert layers["block5_conv2"]["parameters"] == 2_359_808
    assert (layers["block5_conv2"]["output_height"], layers["block5_conv2"]["output_width"]) == (
        6,
        6,
    )


def test_export_onnx_writes_a_verified_model_that_onnxruntime_runs(
    server: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "vgg16.onnx"
    done = featviz("export-onnx", "-o", str(out), target=server.target)
    assert done.returncode == 0, done.stderr
    printed_sha256 = done.stdout.split("sha256 ")[1].split()[0]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == printed_sha256
    assert "MB" in done.stderr  # download progress
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    outputs = session.run(None, {session.get_inputs()[0].name: image})
    assert outputs and all(np.isfinite(output).all() for output in outputs)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("maximize", "block1_conv2", "3-1"), ("CHANNELS", "backwards")),
        (("maximize", "block1_conv2", "3", "--stpes", "3"), ("did you mean '--steps'",)),
        (("maximize", "block1_conv2", "3", "--preset", "quick"), ("--preset", "invalid choice")),
        (("maximize", "block1_conv2", "1,2", "-o", "one.png"), ("2 images need a directory",)),
        (("maximize", "block1_conv2", "1,2", "-o", "one.PNG"), ("2 images need a directory",)),
        (("maximize", "block1_conv2", "1", "--columns", "0"), ("--columns", "at least 1")),
        (("maximize", "block4_conv3:12", "--negate"), ("negate is for a layer and channels",)),
        (("maximize", "block5_conv2"), ("block5_conv2 needs CHANNELS (e.g. block5_conv2 0)",)),
        (
            (
                "atlas",
                "--target",
                "127.0.0.1:1",
                "--target",
                "[::1]:2",
                "-o",
                "site",
                "--variants",
                "0",
            ),
            ("variants: must be at least 1",),
        ),  # the atlas' own clients take any mix of addresses
        (("describe", "--size", "big"), ("--size", "invalid int value")),
        ((), ("COMMAND",)),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: tuple[str, ...], fragments: tuple[str]) -> None:
    done = featviz(*args, target="127.0.0.1:1")
    assert done.returncode == 2
    _assert_one_clear_line(done.stderr, *fragments)


def test_server_errors_exit_1_with_one_line(server: ServerProcess) -> None:
    done = featviz("maximize", "block9_conv1", "0", target=server.target)
    assert done.returncode == 1
    _assert_one_clear_line(done.stderr, "INVALID_ARGUMENT", "layer", "block5_conv3")

    done = featviz("maximize", "block1_conv2", "0", "--size", "9999", target=server.target)
    assert done.returncode == 1
    _assert_one_clear_line(done.stderr, "INVALID_ARGUMENT", "size")

    done = featviz("describe", "--retries", "0", target="127.0.0.1:1")
    assert done.returncode == 1
    _assert_one_clear_line(done.stderr, "UNAVAILABLE", "is a featviz server running")


def test_tls_and_the_token_come_from_the_flags_or_the_environment(
    secure_server: ServerProcess, certificate: tuple[Path, Path]
) -> None:
    target, tls = secure_server.target, ("--tls-ca", str(certificate[0]))
    plaintext = featviz("describe", "--retries", "0", "--token", TOKEN, target=target)
    assert plaintext.returncode == 1
    _assert_one_clear_line(plaintext.stderr, "UNAVAILABLE")

    refused = featviz("describe", *tls, target=target)
    assert refused.returncode == 1
    _assert_one_clear_line(refused.stderr, "UNAUTHENTICATED", "--token")

    accepted = featviz("describe", *tls, "--token", TOKEN, target=target)
    assert accepted.returncode == 0, accepted.stderr
    assert "14,714,688" in accepted.stdout
    from_env = featviz("describe", *tls, target=target, env={"FEATVIZ_TOKEN": TOKEN})
    assert from_env.returncode == 0, from_env.stderr


def test_ctrl_c_cancels_the_run_and_exits_130(server: ServerProcess, tmp_path: Path) -> None:
    cancelled = 'featviz_runs_finished_total{status="cancelled"}'
    cancelled_before = server.metric(cancelled, 0.0)
    args = ("maximize", "block1_conv2", "5", "--size", "128", "--steps", "400")
    with subprocess.Popen(
        _command(*args, "--preview-every", "1", "-o", str(tmp_path)),
        env=_env(server.target),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite started in the background (`cmd &`) inherits SIGINT ignored,
        # and Python then never raises KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as process:
        assert process.stderr is not None
        first_line = process.stderr.readline()
        assert "/400 steps" in first_line, first_line  # the run is under way
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    _assert_one_clear_line(stderr, "interrupted")
    server.wait_metric(cancelled, cancelled_before + 1, timeout=20)  # the server stopped it
    assert not list(tmp_path.iterdir())
