"""index.html in a real browser: headless Chromium driven by selenium with the system chromedriver.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``);
skipped with that message only where they are not installed. Nothing is downloaded: selenium is
pointed at the system binaries, and the page itself fetches nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.leaderboard import build_leaderboard

EVIL = "<script>alert(1)</script>"
INFO = {
    "gap": {"centroid_distance": {"display": "centroid distance", "group": "gap", "higher_is_better": False}},
    "zeroshot_classification": {"top1": {"display": "top-1", "group": "downstream", "higher_is_better": True}},
}
# label -> [(centroid distance, top-1) per seed]; main-score order clip, cua, EVIL; centroid order cua, EVIL, clip
DATA = {"clip": [(0.7, 0.50), (0.8, 0.52)], "cua": [(0.2, 0.45), (0.3, 0.47)], EVIL: [(0.5, 0.30)]}


def _find(name: str, *candidates: str) -> str | None:
    for c in (name, *candidates):
        path = shutil.which(c)
        if path:
            return path
    return None


CHROMIUM = _find("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = _find("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium check needs chromium and chromedriver: apt-get install -y chromium chromium-driver",
)


def _write_job(root: Path, job_id: str, label: str, seed: int, metrics: dict, status: str = "ok") -> None:
    spec = lambda name, label=None: {"name": name, "params": {}, "label": label or name}  # noqa: E731
    job = {"id": job_id, "suite": "html", "objective": spec("x", label), "encoder": spec("tiny"), "dataset": spec("shapes"),
           "train": {}, "seed": seed, "evaluations": [spec("gap"), spec("zeroshot_classification")], "save": [], "resources": {}}
    result = {"status": status, "job": job, "metrics": metrics, "metric_info": INFO, "skipped": {},
              "env": {"device_name": "test", "wall_time_s": 1.0, "started_at": "2025-01-01T00:00:00+00:00"},
              "error": "ValueError: <img src=x onerror=alert(2)>" if status != "ok" else None, "traceback": None}
    (root / job_id).mkdir(parents=True)
    (root / job_id / "result.json").write_text(json.dumps(result))
    (root / job_id / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0 - s / 10}) + "\n" for s in range(5)))


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs") / "html"
    n = 0
    for label, seeds in DATA.items():
        for seed, (cd, top1) in enumerate(seeds):
            _write_job(root, f"j{n}", label, seed, {"gap": {"centroid_distance": cd}, "zeroshot_classification": {"s": {"top1": top1}}})
            n += 1
    _write_job(root, "jfail", "broken", 0, {}, status="failed")  # a row with no numbers: stays last when sorting
    out = build_leaderboard(root, out=tmp_path_factory.mktemp("board"), formats=["html"])
    return out / "index.html"


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def _table(drv, first_metric: str):
    from selenium.webdriver.common.by import By

    for table in drv.find_elements(By.CSS_SELECTOR, "table.sortable"):
        heads = table.find_elements(By.CSS_SELECTOR, "thead th")
        if any(h.text.startswith(first_metric) for h in heads):
            return table, heads
    raise AssertionError(f"no table with a {first_metric!r} column")


def _first_column(table) -> list[str]:
    from selenium.webdriver.common.by import By

    return [row.find_element(By.CSS_SELECTOR, "td").text for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]


def test_page_loads_without_console_errors_or_alerts(driver, page):
    from selenium.common.exceptions import NoAlertPresentException

    driver.get(page.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 -- an injected <script>alert(1)</script> would have opened one
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    images = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert len(images) == 2 and all(ok and width > 0 for ok, width in images)  # gap-vs-score and loss curves


def test_plugin_strings_show_as_text(driver, page):
    from selenium.webdriver.common.by import By

    driver.get(page.resolve().as_uri())
    table, _ = _table(driver, "centroid distance")
    assert EVIL in _first_column(table)
    assert driver.find_elements(By.XPATH, "//td[text()='ValueError: <img src=x onerror=alert(2)>']")
    assert driver.execute_script("return document.querySelectorAll('script').length") == 1
    assert driver.execute_script("return document.querySelectorAll('td img, td script').length") == 0


def test_clicking_a_header_sorts_the_rows(driver, page):
    driver.get(page.resolve().as_uri())
    table, heads = _table(driver, "centroid distance")
    assert _first_column(table) == ["clip", "cua", EVIL, "broken"]  # main-score order
    header = next(h for h in heads if h.text.startswith("centroid distance"))
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    assert _first_column(table) == ["cua", EVIL, "clip", "broken"]  # 0.25, 0.5, 0.75; no value last
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    assert _first_column(table) == ["clip", EVIL, "cua", "broken"]
    heads[0].click()  # objective: text order
    assert _first_column(table) == sorted(["clip", "cua", EVIL, "broken"])
    assert header.get_attribute("aria-sort") is None
