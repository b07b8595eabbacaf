"""The HTML report in a real browser (headless Chromium through Selenium and Debian's chromium-driver): every page
loads from file:// without a console error, every image loads, sorting by top-1 puts the best run first, the kind
filter hides the other kinds, and each run page shows as many thumbnails as it promises. Screenshots of the index
and of a run page are saved under the test's temporary folder."""

from __future__ import annotations

import pandas as pd
import pytest
from reportfixtures import find_chromium, start_chromium

from featkit.report.run_page import PAGE_NAME

BROWSER, DRIVER, WHY_NOT = find_chromium()
pytestmark = [
    pytest.mark.slow,  # end to end: a real Chromium loads the report (make test runs it)
    pytest.mark.skipif(not (BROWSER and DRIVER), reason=WHY_NOT),
]


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    d = start_chromium(BROWSER, DRIVER, tmp_path_factory.mktemp("chromium-profile"))
    yield d
    d.quit()


def open_page(driver, path):
    driver.get(path.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], f"console errors on {path}: {errors}"
    images = driver.execute_script(
        "return Array.from(document.images)"
        ".map(function (i) { return [i.getAttribute('src'), i.complete, i.naturalWidth]; })"
    )
    broken = [src for src, complete, width in images if not complete or width == 0]
    assert broken == [], f"images that did not load on {path}: {broken}"
    return images


def screenshot(driver, path):
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height), 8000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    assert path.stat().st_size > 10_000


def test_every_page_loads_with_its_images_and_thumbnails(driver, report_workspace, tmp_path):
    ws = report_workspace
    index_images = open_page(driver, ws.reports / "index.html")
    assert len(index_images) >= 2  # the summary plots
    screenshot(driver, tmp_path / "index.png")
    for run_id in (ws.logreg, ws.lightgbm, ws.cnn):
        images = open_page(driver, ws.run(run_id) / PAGE_NAME)
        promised = int(driver.find_element("id", "thumb-promise").get_attribute("data-thumbs"))
        thumbs = driver.find_elements("css selector", "figure.thumb")
        assert len(thumbs) == promised
        thumb_imgs = [src for src, _, _ in images if src.startswith("thumbs/")]
        if run_id == ws.cnn:
            assert promised == 0
        else:
            assert promised > 20 and len(thumb_imgs) == promised  # every thumbnail is a loaded photo
    open_page(driver, ws.run(ws.logreg) / PAGE_NAME)
    screenshot(driver, tmp_path / "run.png")


def test_sorting_by_top1_puts_the_best_run_first_and_the_filter_hides_other_kinds(driver, report_workspace):
    ws = report_workspace
    results = pd.read_csv(ws.reports / "results.csv")
    ranked = results.sort_values("top1", ascending=False)["run_id"].tolist()
    open_page(driver, ws.reports / "index.html")

    def first_column():
        return [r.text for r in driver.find_elements("css selector", "#runs tbody tr td:first-child")]

    assert first_column() == results["run_id"].tolist()  # newest first, as built
    top1 = next(th for th in driver.find_elements("css selector", "#runs thead th") if th.text.startswith("test top-1"))
    top1.click()
    assert first_column() == ranked
    top1.click()
    assert first_column() == ranked[::-1]
    log_loss = next(
        th for th in driver.find_elements("css selector", "#runs thead th") if th.text.startswith("log loss")
    )
    log_loss.click()  # lower is better: ascending first, the run without a log loss last
    with_loss = results.dropna(subset=["log_loss"]).sort_values("log_loss")["run_id"].tolist()
    assert first_column() == with_loss + [ws.cnn]

    driver.find_element("css selector", "#kind-filter option[value='cnn']").click()
    visible = [r for r in driver.find_elements("css selector", "#runs tbody tr") if r.is_displayed()]
    assert [r.find_element("css selector", "td").text for r in visible] == [ws.cnn]
