"""The ``classicnets serve`` page in a real headless Chromium (Debian's chromium + chromium-driver, installed
by ``scripts/setup.sh --dev``; nothing is downloaded): draw with the mouse, upload a Fashion-MNIST test image,
switch models, compare twins, read the layer table and the case-study tab, and take the screenshot that
docs/serve.md shows (rewritten only with CLASSICNETS_UPDATE_FIGURES=1)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from test_serve import ROOT, fashion_png, running, serve_runs  # noqa: F401  (serve_runs: the fixture)

from classicnets.serve import ServeConfig

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FIGURES = ROOT / "docs" / "figures"
TWINS = ("fashion-mnist:resnet20", "fashion-mnist:plain20")  # shipped weights, offered beside the runs
WAIT_S = 20


@pytest.fixture(scope="module")
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists(), f"{path} is missing: scripts/setup.sh --dev installs chromium, chromium-driver"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--force-device-scale-factor=1", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def _wait(driver, condition, what: str):
    """Wait for ``condition``; on a timeout, fail with what the page shows (status line, top-1, stages, log)."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition)  # fmt: skip
    except TimeoutException:
        shown = {"status": _texts(driver, "#status"), "top1": _top1(driver), "stages": _stage_titles(driver),
                 "compare": _texts(driver, "#compare")[0][:300],
                 "log": driver.get_log("browser")}  # fmt: skip
        pytest.fail(f"waited {WAIT_S} s for {what}; the page shows {shown}")


def _draw_seven(driver) -> None:
    """A '7' with the mouse: the bar from left to right, then the diagonal down to the left."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "canvas")
    actions = ActionChains(driver, duration=10).move_to_element_with_offset(canvas, -75, -95).click_and_hold()
    for _ in range(12):
        actions.move_by_offset(12, 0)
    for _ in range(14):
        actions.move_by_offset(-6, 14)
    actions.release().perform()


def _texts(driver, selector: str) -> list[str]:
    """The text of every element matching ``selector``, read in one go (the page re-renders as it updates)."""
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)",
                                 selector)  # fmt: skip


def _top1(driver) -> str:
    names = _texts(driver, "#top5 li .name")
    return names[0] if names else ""


def _stage_titles(driver, box: str = "#features") -> list[str]:
    return _texts(driver, f"{box} .stage h3")


def _src(driver, element_id: str) -> str:
    return driver.execute_script("return document.getElementById(arguments[0]).getAttribute('src') || ''", element_id)


def _select_model(driver, label: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    select = Select(driver.find_element(By.ID, "model"))
    select.select_by_visible_text(next(o.text for o in select.options if o.text == label
                                       or o.text.startswith(label + " \u00b7")))  # fmt: skip


def _tab(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'.tabs button[data-tab="{name}"]').click()


def test_the_page_draws_uploads_switches_compares_and_explains(
    browser, serve_runs, tmp_path: Path  # noqa: F811  (the fixture imported from test_serve)
) -> None:
    from selenium.webdriver.common.by import By

    from classicnets.inference import predict

    driver = browser
    upload = tmp_path / "fashion_test_0.png"
    upload.write_bytes(fashion_png(0))  # an ankle boot from the Fashion-MNIST test set
    with running(ServeConfig(runs_dir=serve_runs, weights=TWINS)) as server:
        driver.get(server.url)
        _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 5, "the model list")
        _select_model(driver, "lenet5_modern")
        _wait(driver, lambda d: "lenet5_modern on mnist-5k" in _texts(d, "#model-info")[0], "LeNet")

        # Draw: the top-1 class and every stage's feature maps appear, and the Grad-CAM overlay
        _draw_seven(driver)
        _wait(driver, lambda d: _top1(d) != "", "a top-1 class")
        _wait(driver, lambda d: [t.split()[0] for t in _stage_titles(d)] == ["C1", "S2", "C3", "S4", "C5"], "stages")
        assert "C3 16\u00d710\u00d710" in _stage_titles(driver)[2]
        assert len(_texts(driver, "#features .maps img")) == 6 + 6 + 8 + 8 + 1
        _wait(driver, lambda d: _src(d, "cam").startswith("data:image/png"), "the Grad-CAM overlay")
        _wait(driver, lambda d: "S4" in _texts(d, "#cam-layer")[0], "Grad-CAM at S4")
        assert _top1(driver) == "7", "the LeNet-5 trained on mnist-5k reads the drawn 7"

        # Undo the stroke: the results go; upload a real Fashion-MNIST test image: the page shows the
        # classes `classicnets predict` gives for the same file
        driver.find_element(By.ID, "undo").click()
        _wait(driver, lambda d: _top1(d) == "", "the results to clear")
        driver.find_element(By.ID, "upload").send_keys(str(upload))
        _wait(driver, lambda d: "uploaded: fashion_test_0.png" in _texts(d, "#input-kind")[0], "the upload")
        expected = predict(serve_runs / "lenet5_modern/best.pt", [upload], topk=1, device="cpu")[0]["top"][0][0]
        _wait(driver, lambda d: _top1(d) == expected, f"top-1 {expected!r} for the upload")

        # A file that is not an image: the server's reason shows, and no stale answer stays
        broken = tmp_path / "notes.png"
        broken.write_text("not an image at all")
        driver.find_element(By.ID, "upload").send_keys(str(broken))
        _wait(driver, lambda d: "not an image" in _texts(d, "#status")[0] and _top1(d) == "", "the refusal shown")
        driver.find_element(By.ID, "upload").send_keys(str(upload))
        _wait(driver, lambda d: _top1(d) == expected, f"top-1 {expected!r} again")

        # Switch models: the shipped ResNet-20's stages and its prediction for the same upload
        _select_model(driver, "fashion-mnist:resnet20")
        expected = predict("fashion-mnist:resnet20", [upload], topk=1, device="cpu")[0]["top"][0][0]
        _wait(driver, lambda d: [t.split()[0] for t in _stage_titles(d)] == ["relu", "layer1", "layer2", "layer3"],
              "the ResNet's stages")  # fmt: skip
        _wait(driver, lambda d: _top1(d) == expected == "Ankle boot", f"ResNet-20's top-1 {expected!r}")

        # The residual net beside its plain twin, same input
        _tab(driver, "compare")
        _wait(driver, lambda d: [h.split()[0] for h in _texts(d, "#compare .side > h3")] == list(TWINS),
              "the twins side by side")  # fmt: skip
        _wait(driver, lambda d: len(_texts(d, "#compare .side .maps img")) == 2 * 4 * 6, "both nets' maps")
        _wait(driver, lambda d: _src(d, "cam").startswith("data:image/png"), "Grad-CAM for the upload")
        _screenshot(driver, tmp_path / "serve_compare.png")

        # The layer table and the case-study tab
        _tab(driver, "layers")
        _wait(driver, lambda d: len(_texts(d, "#layers tbody tr")) > 50, "the layer table")
        assert "3*3*1*16" in _texts(driver, "#layers tbody tr")[0]
        assert "parameters" in _texts(driver, "#layers-total")[0]
        _tab(driver, "claims")
        _wait(driver, lambda d: "classicnets claims run all" in _texts(d, "#claims")[0], "the case-study message")

        # Back to LeNet on the feature maps, a fresh 7: the screenshot for docs/serve.md
        _tab(driver, "features")
        _select_model(driver, "lenet5_modern")
        driver.find_element(By.ID, "clear").click()
        _draw_seven(driver)
        _wait(driver, lambda d: _top1(d) == "7" and len(_stage_titles(d)) == 5 and "S4" in _texts(d, "#cam-layer")[0]
              and _src(d, "seen").startswith("data:"), "LeNet on the new 7")  # fmt: skip
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert [m for m in errors if "status of 415" not in m] == [], errors  # 415s: the deliberate bad upload
        _screenshot(driver, tmp_path / "serve_page.png")
    if os.environ.get("CLASSICNETS_UPDATE_FIGURES") == "1":
        FIGURES.mkdir(parents=True, exist_ok=True)
        for name in ("serve_page.png", "serve_compare.png"):
            shutil.copy(tmp_path / name, FIGURES / name)


def _screenshot(driver, path: Path) -> None:
    """The whole page, 1400 px wide, as a PNG at ``path``."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # a viewport as tall as the page
                           {"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
    assert driver.save_screenshot(str(path))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    with Image.open(path) as img:
        assert img.size[0] == 1400 and img.size[1] >= 800
