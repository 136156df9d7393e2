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
    "linear_probe": {"accuracy": {"display": "accuracy", "group": "downstream", "higher_is_better": True}},
}
MAIN_SCORES = {
    "zeroshot_classification": {"key": "*.top1", "higher_is_better": True, "description": "zero-shot top-1 (mean over sets)"},
    "linear_probe": {"key": "*.accuracy", "higher_is_better": True, "description": "linear-probe accuracy"},
}
REFERENCES = {"chance": {"zeroshot_classification.s.top1": 0.25, "linear_probe.s.accuracy": 0.25},
              "raw pixels": {"linear_probe.s.accuracy": 0.3}}
# label -> [(centroid distance, top-1, probe accuracy) per seed]; main-score order clip, cua, EVIL, extra;
# centroid order cua, EVIL, clip, extra
DATA = {"clip": [(0.7, 0.50, 0.6), (0.8, 0.52, 0.62)], "cua": [(0.2, 0.45, 0.55), (0.3, 0.47, 0.57)],
        EVIL: [(0.5, 0.30, 0.4)], "extra": [(0.9, 0.2, 0.3), (0.95, 0.22, 0.32)]}
LRS = (1e-4, 1e-3, 1e-2)
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


def _write_job(root: Path, job_id: str, label: str, seed: int, metrics: dict, status: str = "ok", job_extra: dict | None = None,
               result_extra: dict | None = None) -> None:
    spec = lambda name, label=None: {"name": name, "params": {}, "label": label or name}  # noqa: E731
    job = {"id": job_id, "suite": "html", "objective": spec("x", label), "encoder": spec("tiny"), "dataset": spec("shapes"),
           "train": {"lr": 1e-3}, "seed": seed, "evaluations": [spec("gap"), spec("zeroshot_classification"), spec("linear_probe")],
           "save": [], "resources": {}, **(job_extra or {})}
    result = {"status": status, "job": job, "metrics": metrics, "metric_info": INFO, "skipped": {}, "main_scores": MAIN_SCORES,
              "env": {"device_name": "test", "wall_time_s": 1.0, "started_at": "2025-01-01T00:00:00+00:00"},
              "error": "ValueError: <img src=x onerror=alert(2)>" if status != "ok" else None, "traceback": None,
              **(result_extra or {})}
    (root / job_id).mkdir(parents=True)
    (root / job_id / "result.json").write_text(json.dumps(result))
    (root / job_id / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0 - s / 10}) + "\n" for s in range(5)))


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs") / "html"
    n = 0
    tuning = {"trials": len(LRS), "seeds": [0], "metric": "validation.s.top1"}
    for label, seeds in DATA.items():
        for seed, (cd, top1, acc) in enumerate(seeds):
            _write_job(root, f"j{n}", label, seed, {"gap": {"centroid_distance": cd}, "zeroshot_classification": {"s": {"top1": top1}},
                                                     "linear_probe": {"s": {"accuracy": acc}}},
                       job_extra={"tuned": {"train.lr": LRS[n % 3]}, "tuning": tuning}, result_extra={"reference_rows": REFERENCES})
            n += 1
        for i, lr in enumerate(LRS):  # the tuning stage: one seed per learning rate
            _write_job(root, f"t{n}-{i}", label, 0, {"validation": {"s": {"top1": 0.3 + 0.1 * i}}},
                       job_extra={"stage": "tune", "trial": {"train.lr": lr}, "train": {"lr": lr}})
    _write_job(root, "jfail", "broken", 0, {}, status="failed")  # a row with no numbers: stays last when sorting
    out = build_leaderboard(root, out=tmp_path_factory.mktemp("board") / "html", formats=["html", "csv"], index=True)
    return out


@pytest.fixture(scope="module")
def page(board) -> Path:
    return board / "index.html"


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


def _severe(drv) -> list:
    return [entry for entry in drv.get_log("browser") if entry["level"] == "SEVERE"]


def test_page_loads_without_console_errors_or_alerts(driver, page):
    from selenium.common.exceptions import NoAlertPresentException

    driver.get(page.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 -- an injected <script>alert(1)</script> would have opened one
    assert _severe(driver) == []
    images = driver.execute_script("return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert [alt for alt, _, _ in images] == ["Critical-difference diagram", "Gap vs main score",
                                              "Tuning: validation score against learning rate", "Training loss curves"]
    assert all(ok and width > 0 for _, ok, width in images)


def test_page_leads_with_the_answer(driver, page):
    from selenium.webdriver.common.by import By

    driver.get(page.resolve().as_uri())
    headings = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "h2, h3")]
    assert headings[:4] == ["shapes · tiny", "Main score", "Critical-difference diagram", "Gap vs main score"]
    first_table = driver.find_element(By.CSS_SELECTOR, "table.sortable")
    assert [h.text for h in first_table.find_elements(By.CSS_SELECTOR, "thead th")][:5] == [
        "objective", "main score ↑ (mean)", "95% CI (bootstrap)", "rank interval (95%)", "tier"]
    # the first figure is on screen within the first two screens of a laptop-sized window
    driver.set_window_size(1280, 900)
    top = driver.execute_script("return document.images[0].getBoundingClientRect().top + window.scrollY")
    assert top < 1800


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
    assert _first_column(table) == ["clip", "cua", EVIL, "extra", "broken"]  # main-score order
    header = next(h for h in heads if h.text.startswith("centroid distance"))
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    assert _first_column(table) == ["cua", EVIL, "clip", "extra", "broken"]  # 0.25, 0.5, 0.75, 0.925; no value last
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    assert _first_column(table) == ["extra", "clip", EVIL, "cua", "broken"]
    heads[0].click()  # objective: text order
    assert _first_column(table) == sorted(["clip", "cua", EVIL, "broken", "extra"])
    assert header.get_attribute("aria-sort") is None


def test_reference_rows_are_marked_and_never_sorted_in(driver, page):
    from selenium.webdriver.common.by import By

    driver.get(page.resolve().as_uri())
    table, heads = _table(driver, "main score")
    refs = table.find_elements(By.CSS_SELECTOR, "tbody.references tr")
    assert [r.find_element(By.CSS_SELECTOR, "td").text for r in refs] == ["chance reference"]  # raw pixels has no zero-shot
    main = next(h for h in heads if h.text.startswith("main score"))
    for _ in range(2):  # either direction: the objectives move, the reference row stays last and outside the ranking
        main.click()
        rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert rows[-1].get_attribute("class") == "reference"
        assert "chance" not in _first_column(table)
    probe, _ = _table(driver, "s accuracy")
    labels = [r.find_element(By.CSS_SELECTOR, "td").text for r in probe.find_elements(By.CSS_SELECTOR, "tbody.references tr")]
    assert labels == ["chance reference", "raw pixels reference"]


def test_tuning_table_shows_chosen_values_and_budget(driver, page):
    driver.get(page.resolve().as_uri())
    table, heads = _table(driver, "chosen train.lr")
    assert [h.text for h in heads] == ["objective", "chosen train.lr", "trials per objective", "tuning seeds", "selected by (validation)"]
    assert set(_first_column(table)) == {"clip", "cua", EVIL, "extra"}


def test_index_links_every_suite_and_sorts(driver, board):
    from selenium.webdriver.common.by import By

    index = board.parent / "index.html"
    driver.get(index.resolve().as_uri())
    assert _severe(driver) == []
    links = driver.find_elements(By.CSS_SELECTOR, "td a")
    assert links[0].text == "html" and links[0].get_attribute("href").endswith("/html/index.html")
    heads = driver.find_elements(By.CSS_SELECTOR, "thead th")
    heads[0].click()
    assert heads[0].get_attribute("aria-sort") == "ascending"
    links[0].click()
    assert driver.title == "Leaderboard: html"


def test_index_and_page_fit_a_1400px_window(driver, board, tmp_path):
    """The index's long cells (table names, main-score descriptions, tier-1 lists) wrap: no horizontal
    scrolling in a 1,400 px window, even for a long objective list; the suite page's first table too."""
    import shutil as sh

    lb = tmp_path / "leaderboard"
    sh.copytree(board, lb / "html")
    facts = json.loads((lb / "html" / "board.json").read_text())
    facts["tables"][0]["tier1"] = [f"objective_with_a_long_label_{i}(temperature=0.07,learnable=true)" for i in range(16)]
    facts["tables"][0]["description"] = "zero-shot top-1, unweighted mean over the attribute tasks " * 3
    facts["tables"][0]["dataset"] = "shapes(captions=canonical,shape_groups=4,train_size=20000,eval_size=1000)"
    (lb / "html" / "board.json").write_text(json.dumps(facts))
    from harness.leaderboard import build_index

    driver.set_window_size(1400, 900)
    for page in (build_index(lb), lb / "html" / "index.html"):
        driver.get(page.resolve().as_uri())
        width = driver.execute_script("return document.querySelector('table.sortable').getBoundingClientRect().right")
        assert width <= driver.execute_script("return document.documentElement.clientWidth"), page
    driver.get((lb / "index.html").resolve().as_uri())
    from selenium.webdriver.common.by import By

    heads = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "thead th")]
    assert "tier 1 (not resolved from the best mean)" in heads and not any("top" in h for h in heads)
