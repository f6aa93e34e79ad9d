"""bench/gpu.py, the GPU one-shot check, runs end to end on the CPU (--device cpu --quick) and
reports every section."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from featviz_server.engine import DEFAULT_PRESET, recipe

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpu.py"


def test_the_gpu_check_runs_every_section_on_the_cpu_and_writes_its_figures(
    tmp_path: Path,
) -> None:
    report_path = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--device", "cpu", "--quick", "--json", str(report_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())

    # (1) the CPU against itself: the same numbers, and both canonical units measured
    assert [row["unit"] for row in report["agreement"]] == ["block1_conv2 14", "block5_conv2 410"]
    for row in report["agreement"]:
        assert row["ok"] and row["activations"] == 0.0 and row["input_gradients"] == 0.0
        assert row["plain"]["device"] == row["plain"]["cpu"] > 0
        assert row["robust"]["device"] == row["robust"]["cpu"] > 0
    # (2) a rate for every layer and batch size (no bf16 on the CPU)
    rates = {
        (row["layer"], row["images"], row["bf16"]): row["rate"] for row in report["throughput"]
    }
    assert set(rates) == {
        (layer, n, False) for layer in ("block1_conv2", "block3_conv3") for n in (1, 4)
    }
    assert all(rate > 0 for rate in rates.values())
    # (3) both servers, every client count, and the gain of batching
    batched = [row for row in report["batching"] if row["server"] == "batched"]
    assert [row["clients"] for row in batched] == [1, 4]
    assert all(row["rate"] > 0 and row["gain"] > 0 for row in batched)
    # (4) the projection covers the 4,224 conv channels at 224 px, extrapolated from 48 px
    projection = report["projection"]
    assert projection["images"] == 4224 and projection["size"] == 224
    assert projection["measured_at"] == 48 and projection["hours"]["float32"] > 0
    assert "(4) every channel of every conv layer: 4224 images" in done.stdout


def test_on_a_gpu_the_canonical_runs_take_the_default_presets_own_step_caps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(BENCH.parent))  # as when run: bench/engine.py is importable
    spec = importlib.util.spec_from_file_location("gpu", BENCH)
    assert spec is not None and spec.loader is not None
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    for layer, channel in (("block1_conv2", 14), ("block5_conv2", 410)):
        job = gpu.canonical_job(layer, channel, 128, None)  # what a run without --quick builds
        assert job.recipe.steps == recipe(DEFAULT_PRESET, layer=layer).steps
        assert (job.channels, job.recipe.size, job.seed) == ((channel,), 128, 0)
