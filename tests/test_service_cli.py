"""`featviz-server` commands and settings: defaults, FEATVIZ_* variables, flags, clear errors."""

from __future__ import annotations

import argparse
import hashlib
import subprocess
from pathlib import Path

import pytest
from serverproc import ServerProcess, server_command

from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc
from featviz_server.config import Settings, SettingsError, add_arguments
from featviz_server.weights import Weights


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(server_command(*args), capture_output=True, text=True, timeout=300)


def parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(flags)


def test_flags_override_variables_which_override_defaults() -> None:
    environ = {"FEATVIZ_MAX_STEPS": "100", "FEATVIZ_TOKEN": "t", "FEATVIZ_DRAIN_GRACE": "2.5"}
    from_env = Settings.from_env(environ)
    assert (from_env.max_steps, from_env.token, from_env.drain_grace) == (100, "t", 2.5)
    assert from_env.max_size == Settings().max_size  # untouched: the default
    flagged = from_env.with_args(parse("--max-steps", "50", "--cache-dir", "/tmp/c"))
    assert (flagged.max_steps, flagged.token, flagged.cache_dir) == (50, "t", Path("/tmp/c"))


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"max_size": 2048}, "max_size: 2048 is not in 32..1024"),
        ({"port": 70000}, "port: 70000"),
        ({"max_concurrent_runs": 0}, "max_concurrent_runs: must be at least 1"),
        ({"tls_cert": Path("c.pem")}, "tls_cert and tls_key must be given together"),
        ({"drain_grace": -1.0}, "drain_grace: must not be negative"),
        ({"unread_result_timeout": 0.0}, "unread_result_timeout: must be more than 0"),
    ],
)
def test_impossible_settings_are_refused_by_name(values: dict, named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings(**values)


def test_unparsable_variables_are_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="FEATVIZ_PORT: 'x' is not a valid int"):
        Settings.from_env({"FEATVIZ_PORT": "x"})
    with pytest.raises(SettingsError, match="FEATVIZ_BF16: 'maybe' is not one of"):
        Settings.from_env({"FEATVIZ_BF16": "maybe"})


def test_bf16_is_a_setting_read_as_a_boolean_from_the_variable_and_the_flag() -> None:
    assert not Settings().bf16
    assert Settings.from_env({"FEATVIZ_BF16": "1"}).bf16
    assert not Settings.from_env({"FEATVIZ_BF16": "false"}).bf16
    on = Settings.from_env({"FEATVIZ_BF16": "0"}).with_args(parse("--bf16"))
    assert on.bf16 and not on.with_args(parse("--no-bf16")).bf16


def test_serve_with_a_bad_setting_prints_one_line_and_fails() -> None:
    result = run("serve", "--max-size", "4096")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "featviz-server: error: max_size: 4096 is not in 32..1024"
    ]


def test_serve_on_a_taken_port_says_so(server: ServerProcess) -> None:
    result = run("serve", "--host", "127.0.0.1", "--port", str(server.port))
    assert result.returncode == 1
    assert f"featviz-server: error: cannot listen on 127.0.0.1:{server.port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_weights_prints_the_verified_source_and_checksum(weights: Weights) -> None:
    result = run("weights")
    assert result.returncode == 0, result.stderr
    assert f"sha256: {weights.sha256}" in result.stdout.splitlines()
    assert f"source: {weights.source}" in result.stdout.splitlines()


def test_weights_refuses_a_file_that_is_not_vgg16(tmp_path: Path) -> None:
    bogus = tmp_path / "vgg16.pth"
    bogus.write_bytes(b"not a checkpoint")
    result = run("weights", "--source", str(bogus), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"featviz-server: error: {bogus}")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_export_onnx_writes_the_file_the_rpc_streams(server: ServerProcess, tmp_path: Path) -> None:
    output = tmp_path / "vgg16.onnx"
    result = run("export-onnx", "-o", str(output))
    assert result.returncode == 0, result.stderr
    with server.channel() as channel:
        stub = pb_grpc.FeatureVisualizationServiceStub(channel)
        first = next(stub.ExportOnnx(pb.ExportOnnxRequest(), timeout=600))
    assert hashlib.sha256(output.read_bytes()).hexdigest() == first.sha256
    assert first.sha256 in result.stdout
