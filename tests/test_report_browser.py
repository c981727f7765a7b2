"""The HTML report in a real headless browser: Debian's chromium and chromedriver,
driven by selenium. The page is loaded from file:// (no server), must log no
console error, its category filter must hide and show rows, and a screenshot
must show the page (not blank) with its thumbnails loaded.

Skips with the reason when chromium, chromedriver or selenium are missing
(.ci/run installs them as root).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke as run_cli

pytest.importorskip("PIL", reason="the report needs Pillow (the 'view' extra)")
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install '.[test]')"
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1200,900",
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver; .ci/run does it as root)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_report_in_a_browser(tmp_path: Path, browser: Any) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    demo = tmp_path / "demo"
    assert run_cli(["example", str(demo)]).exit_code == 0
    out = tmp_path / "review"
    result = run_cli(["-C", str(demo), "report", "-o", str(out)])
    assert result.exit_code == 0, result.output
    browser.get((out / "index.html").as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

    rows = browser.find_elements(By.CSS_SELECTOR, "#pairs tbody tr")
    assert len(rows) == 4
    thumbs = browser.find_elements(By.CSS_SELECTOR, "img.thumb")
    assert len(thumbs) == 4
    for img in thumbs:  # loaded from the thumbs/ folder beside the page
        assert browser.execute_script("return arguments[0].naturalWidth", img) > 50

    select = Select(browser.find_element(By.ID, "filter"))
    select.select_by_value("geometry")
    visible = [r for r in rows if r.is_displayed()]
    assert len(visible) == 1 and "C03-Knee" in visible[0].text
    assert browser.find_element(By.ID, "shown").text == "1"
    select.select_by_value("naming")
    assert "C04-Knee" in next(r for r in rows if r.is_displayed()).text
    select.select_by_value("all")
    assert all(r.is_displayed() for r in rows)

    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    shot.save(tmp_path / "report.png")
    colours = shot.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) blank"
    browser.execute_script("arguments[0].scrollIntoView()", thumbs[0])
    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    dark = sum(n for n, (r, g, b) in shot.getcolors(maxcolors=1 << 20) or [] if r + g + b < 120)
    assert dark > 2000, "no thumbnail (dark picture) is visible in the screenshot"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
