"""`report --html` (issue 30): a self-contained page, written atomically into a folder only a report may replace,
checked in a real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium): no console errors,
every plot drawn, and a history line with one point per run the database holds, a planted slowdown marked."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.test_compare import noisy_samples, sampled
from tests.test_db import TEST_ENV
from tests.test_report import cli, results_file
from vggbench.bench.db import Database, import_files

SCREENSHOT = Path("/tmp/vggbench-report.png")  # for people to look at; the test's own copy is under tmp_path


def history_runs(tmp_path, medians=(10.0, 10.0, 10.2, 12.5)) -> list[Path]:
    """Runs of one machine on successive days and commits, eager and onnxruntime at batch 1 and 8; the last one
    25% slower (a regression the gate must mark)."""
    paths = []
    for day, median in enumerate(medians, start=1):
        env = {**TEST_ENV, "git_commit": f"{day:07x}" * 2, "created": f"2026-01-{day:02d}T00:00:00+00:00"}
        rows = [sampled(backend, batch, noisy_samples(median * batch * factor, n=40, sd=0.005, seed=day * 10 + k))
                for k, (backend, factor) in enumerate((("eager", 1.0), ("onnxruntime", 0.8))) for batch in (1, 8)]
        path = results_file(tmp_path, rows, f"day{day}", env=env)
        data = json.loads(path.read_text())
        data["created"] = env["created"]
        path.write_text(json.dumps(data))
        paths.append(path)
    import_files(paths)
    return paths


def test_the_page_is_self_contained_and_marks_the_regression(tmp_path):
    paths = history_runs(tmp_path)
    result = cli("report", paths[-1], "--html", tmp_path / "page")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "page" / "index.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from anywhere
    assert page.count('<img class="plot"') >= 2 and "data:image/png;base64," in page
    assert page.count('<svg class="history"') == 4 and page.count('data-points="4"') == 4
    assert page.count('class="point regressed"') == 4  # every case of the last run: 25% slower, far beyond 5%
    # a second report over it only with --force, and never over a folder vggbench did not write
    assert cli("report", paths[-1], "--html", tmp_path / "page").exit_code == 2
    assert cli("report", paths[-1], "--html", tmp_path / "page", "--force").exit_code == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    refused = cli("report", paths[-1], "--html", mine, "--force")
    assert refused.exit_code == 2 and "not replaced" in refused.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    # --no-db: the page without the history
    assert cli("report", paths[-1], "--html", tmp_path / "bare", "--no-db").exit_code == 0
    assert '<svg class="history"' not in (tmp_path / "bare" / "index.html").read_text()


def _chromium():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("needs selenium (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
def test_the_page_in_a_real_headless_browser(tmp_path):
    from selenium.webdriver.common.by import By

    paths = history_runs(tmp_path)
    # layer errors to show: a real profile from benchmarks/results
    import_files([Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "epyc2-vgg16-layers-20261126.json"])
    assert cli("report", paths[-1], "--html", tmp_path / "page").exit_code == 0
    with Database() as database:
        runs = len(database.runs(_runs_only()))
    browser = _chromium()
    try:
        browser.get((tmp_path / "page" / "index.html").as_uri())
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        images = browser.find_elements(By.CSS_SELECTOR, "img")
        assert images and all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)
                              for i in images)
        charts = browser.find_elements(By.CSS_SELECTOR, "svg.history")
        assert charts and all(c.size["width"] > 0 and c.size["height"] > 0 for c in charts)
        for chart in charts:
            assert len(chart.find_elements(By.CSS_SELECTOR, "circle.point")) == runs
        assert len(browser.find_elements(By.CSS_SELECTOR, "circle.point.regressed")) == len(charts)
        assert "regression(s) in the history" in browser.find_element(By.ID, "regression-count").text  # the JS ran
        assert browser.find_elements(By.XPATH, "//h2[starts-with(., 'per-layer error')]")
        browser.find_element(By.CSS_SELECTOR, "table.sortable th").click()  # sorting: no error either
        assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
        # the whole page, beyond the window (Chromium's DevTools call)
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        (tmp_path / "report.png").write_bytes(base64.b64decode(shot["data"]))
        assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with contextlib.suppress(OSError):  # the copy for people is a courtesy; the test's own is above
            shutil.copyfile(tmp_path / "report.png", SCREENSHOT)
    finally:
        browser.quit()


def _runs_only():
    from vggbench.bench.db import HistoryFilter

    return HistoryFilter(kind=("run",))
