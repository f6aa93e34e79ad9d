"""Results in Jupyter, through IPython's own display machinery: a real Result from a real server
renders as a labelled grid of its images, and `live` updates one display in place as the run
streams, ending with the result."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from IPython.core.formatters import DisplayFormatter
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from serverproc import ServerProcess

import featviz
from featviz.notebook import live

IMAGE = re.compile(r'src="data:image/png;base64,([^"]+)"')


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[featviz.Client]:
    with featviz.Client(server.target) as client:
        yield client


def test_a_result_displays_as_a_labelled_grid_of_its_images(client: featviz.Client) -> None:
    result = client.maximize("block1_conv2", [14, 3], size=32, steps=4, seed=5)

    shown, _ = DisplayFormatter().format(result)

    page = shown["text/html"]
    assert [base64.b64decode(data) for data in IMAGE.findall(page)] == [
        i.png for i in result.images
    ]
    figures = zip(result.images, result.activations, result.robust_activations, strict=True)
    for image, activation, robust in figures:
        assert f"channel {image.channel} · seed 5" in page
        assert f"activation {activation:.4g}" in page
        assert f"robust {robust:.4g}" in page
    assert "block1_conv2" in page and "4 steps" in page


def test_live_updates_one_display_in_place_and_returns_the_result(client: featviz.Client) -> None:
    InteractiveShell.instance()  # the kernel's shell, as in a notebook
    with capture_output() as captured:
        result = live(client.stream_maximize("block1_conv2", 14, size=32, steps=6, preview_every=2))

    outputs = captured.outputs
    display_ids = {output.transient["display_id"] for output in outputs}
    assert len(display_ids) == 1  # one display...
    assert not outputs[0].update and all(output.update for output in outputs[1:])  # ...updated
    pages = [output.data["text/html"] for output in outputs]
    assert [step for page in pages for step in re.findall(r"step (\d)/6", page)] == ["2", "4", "6"]
    assert all(len(IMAGE.findall(page)) == 1 for page in pages[1:])
    assert base64.b64decode(IMAGE.findall(pages[-1])[0]) == result.images[0].png
    assert f"activation {result.activations[0]:.4g}" in pages[-1]


def test_the_sdk_does_not_import_ipython() -> None:
    code = "import sys, featviz, featviz.notebook; print('IPython' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
