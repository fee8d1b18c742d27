"""The explorer in a real browser: `cram app` on 127.0.0.1, driven by headless Chromium.

Uses Debian's ``chromium`` (``/usr/bin/chromium``, or ``$CRAM_CHROMIUM``) through Playwright's
Python API; no browser is downloaded. The Compare page must show model and human curves and the
Δγ posterior within 10 s of the first page load (the issue's requirement, on 2 cores); the
screenshot goes to the test's tmp folder, and to ``docs/img/explorer_compare.png`` when
``CRAM_UPDATE_SCREENSHOT=1``. A user's own curve CSV is uploaded through the Compare page's file
input and must come back with its curve named and a γ estimate. The run page of a study run
(``forgetting.csv``) shows forgetting over a delay: its charts and the form check in words.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from app_helpers import make_demo_like, make_study_like

CHROMIUM = os.environ.get("CRAM_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOAD_BUDGET_S = 10.0
REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                       reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("playwright")
    given = os.environ.get("CRAM_APP_TEST_RUNS")  # e.g. runs/demo after `make demo`
    root = Path(given) if given else make_demo_like(tmp_path_factory.mktemp("runs") / "demo",
                                                    seeds=3)
    yield from _serve(root, tmp_path_factory)


@pytest.fixture(scope="module")
def study_server(tmp_path_factory):
    """`cram app` on a plain synthetic run, a synthetic study run and its forgetting fit."""
    pytest.importorskip("playwright")
    yield from _serve(make_study_like(tmp_path_factory.mktemp("runs") / "study"),
                      tmp_path_factory)


def _serve(root: Path, tmp_path_factory):
    """Start `cram app --runs ROOT` on a free port; yield ``(url, root)``; stop its group."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("log") / "streamlit.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "cram", "app", "--runs", str(root), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"streamlit did not start; see {log.name}")
        time.sleep(0.3)
    yield url, root
    os.killpg(proc.pid, signal.SIGTERM)  # our own process group (start_new_session)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


def test_compare_page_in_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, _ = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2400})
            t0 = time.perf_counter()
            page.goto(f"{url}/?page=Compare", wait_until="domcontentloaded")
            # the posterior's metrics come last on the page: when they are there, all is drawn
            page.get_by_text("Δγ posterior mean").wait_for(timeout=60_000)
            page.wait_for_selector('[data-testid="stDataFrame"]', timeout=30_000)
            charts = page.locator('[data-testid="stVegaLiteChart"]')
            charts.first.wait_for(timeout=30_000)
            while charts.count() < 2 and time.perf_counter() - t0 < 60:
                page.wait_for_timeout(100)
            elapsed = time.perf_counter() - t0
            page.wait_for_timeout(800)  # let the charts finish their first paint
            shot = tmp_path / "explorer_compare.png"
            page.screenshot(path=str(shot), full_page=True)
            body = page.inner_text("body")
            assert page.locator('[data-testid="stException"]').count() == 0
            assert charts.count() >= 2  # curve overlay + Δγ posterior histogram
            assert "cram-seed0:attention_library" in body  # a model curve is chosen
            assert "rubin1999/matched" in body  # a human curve is chosen
            assert "form: power" in body and "window: all delays" in body
            assert "90% HDI" in body
            # the budget holds for an otherwise idle 2-core machine: when other jobs share the
            # cores (a load average above the core count), it is scaled by the excess load
            load = os.getloadavg()[0] / (os.cpu_count() or 1)
            budget = LOAD_BUDGET_S * max(1.0, load)
            assert elapsed < budget, (f"Compare page took {elapsed:.1f} s (budget {budget:.1f} s "
                                      f"at load {load:.2f} per core)")
            # the view is in the URL: page parameters were written back
            assert "mkind=episodic_reliance" in page.url and "form=power" in page.url
            # the other pages render in the same browser
            for name, marker in (("Runs", "Attention fraction against step"),
                                 ("Human data", "Ebbinghaus (1885)")):
                page.goto(f"{url}/?page={name.replace(' ', '+')}")
                page.get_by_text(marker).first.wait_for(timeout=30_000)
                assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
    assert shot.stat().st_size > 20_000
    print(f"Compare page ready in {elapsed:.2f} s (load {load:.2f} per core); screenshot {shot}")
    if os.environ.get("CRAM_UPDATE_SCREENSHOT") == "1":
        dest = REPO / "docs" / "img" / "explorer_compare.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image  # a palette PNG keeps the committed screenshot small

        Image.open(shot).convert("RGB").quantize(colors=128).save(dest, optimize=True)


def test_claims_page_in_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    from cram.core.claims import load_claims

    url, _ = server
    claims = load_claims(REPO / "claims" / "registry.toml")
    refuted = [c for c in claims if c.status == "refuted"]
    other = next(c for c in claims if c.status == "qualified")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2400})
            page.goto(f"{url}/?page=Claims", wait_until="domcontentloaded")
            page.get_by_text("Paper claims and what we measured").wait_for(timeout=60_000)
            page.wait_for_selector('[data-testid="stDataFrame"]', timeout=30_000)
            expanders = page.locator('[data-testid="stExpander"]')
            expanders.first.wait_for(timeout=30_000)
            assert expanders.count() == len(claims)  # no filter chosen: every claim
            # filter by a status in the page's own widget, as a reader would
            status = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Status")
            status.locator("input").click()
            page.keyboard.type("refuted")
            page.keyboard.press("Enter")
            page.keyboard.press("Escape")
            deadline = time.time() + 30
            while expanders.count() != len(refuted) and time.time() < deadline:
                page.wait_for_timeout(100)
            assert expanders.count() == len(refuted)
            for c in refuted:
                page.get_by_text(f"{c.claim} · refuted").wait_for(timeout=10_000)
            assert page.get_by_text(f"{other.claim} · qualified").count() == 0
            # open one claim: its summary and command are in the page
            page.get_by_text(f"{refuted[0].claim} · refuted").click()
            page.get_by_text(refuted[0].summary[:60]).wait_for(timeout=10_000)
            body = page.inner_text("body")
            assert refuted[0].command.strip().splitlines()[-1][:40] in body
            assert page.locator('[data-testid="stException"]').count() == 0
            assert "status=refuted" in page.url and len(page.url) < len(url) + 100
            page.screenshot(path=str(tmp_path / "explorer_claims.png"), full_page=True)
        finally:
            browser.close()


USER_CSV = ("curve,delay_value,delay_unit,measure,value,n\n"
            "mine,1,hours,recall,0.9,40\nmine,2,hours,recall,0.8,40\n"
            "mine,4,hours,recall,0.7,40\nmine,8,hours,recall,0.62,40\n"
            "mine,24,hours,recall,0.5,40\n")


def test_user_csv_on_the_compare_page_in_chromium(server, tmp_path):
    """Upload a curve CSV through the page's file input: its curve and its γ are shown."""
    from playwright.sync_api import sync_playwright

    url, _ = server
    csv = tmp_path / "my_recall.csv"
    csv.write_text(USER_CSV, encoding="utf-8")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2400})
            page.goto(f"{url}/?page=Compare", wait_until="domcontentloaded")
            page.get_by_text("Quick MLE fits (live)").wait_for(timeout=60_000)
            page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
                str(csv))
            # the user's curve comes back in words: its name, where it is from, its γ
            line = page.locator('[data-testid="stMarkdownContainer"]').filter(
                has_text="my_recall/mine").filter(has_text="γ = ")
            line.first.wait_for(timeout=30_000)
            text = line.first.inner_text()
            assert "your CSV: my_recall.csv" in text
            assert "90% confidence interval (MLE)" in text
            gamma = float(re.search(r"γ = (\d+\.\d+) \(MLE\)", text).group(1))
            assert 0.05 < gamma < 1.0
            # the MLE Δγ turns to the pair of a model curve and the user's curve
            page.locator("p").filter(has_text="describes this pair only").filter(
                has_text="my_recall/mine").first.wait_for(timeout=30_000)
            body = page.inner_text("body")
            assert "my_recall/mine" in body  # also among the chosen human curves and the pair
            assert page.locator('[data-testid="stException"]').count() == 0
            assert "Your CSV was not loaded" not in body
            page.screenshot(path=str(tmp_path / "explorer_user_csv.png"), full_page=True)
        finally:
            browser.close()
    print(f"user CSV: γ = {gamma:.3f}; screenshot {tmp_path / 'explorer_user_csv.png'}")


def test_forgetting_section_on_the_run_page_in_chromium(study_server, tmp_path):
    """A study run's page shows its forgetting curves, people's, and the verdict in words."""
    from playwright.sync_api import sync_playwright

    url, _ = study_server
    charts_sel = '[data-testid="stVegaLiteChart"]'
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2400})
            # a plain run: no such section, and the number of charts without it
            page.goto(f"{url}/?page=Runs&focus=cram-seed0", wait_until="domcontentloaded")
            page.get_by_text("Is the logged reliance real?").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            assert page.get_by_text("Forgetting over a delay").count() == 0
            plain = page.locator(charts_sel).count()
            page.goto(f"{url}/?page=Runs&focus=study-cram-seed0", wait_until="domcontentloaded")
            heading = page.get_by_text("Forgetting over a delay: study-cram-seed0")
            heading.wait_for(timeout=60_000)
            page.get_by_text("Form check").first.wait_for(timeout=30_000)
            charts = page.locator(charts_sel)
            deadline = time.time() + 30
            while charts.count() < plain + 3 and time.time() < deadline:
                page.wait_for_timeout(100)
            # the model per ablation, people's cued recall, massed against spaced
            assert charts.count() == plain + 3
            last = charts.nth(charts.count() - 1)
            last.scroll_into_view_if_needed()
            box = last.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100
            body = page.inner_text("body")
            assert "study-cram-seed0:forgetting/last/none: a power law" in body
            assert "The semantic tier answers them" in body
            assert page.locator('[data-testid="stException"]').count() == 0
            heading.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "explorer_forgetting.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "explorer_forgetting.png").stat().st_size > 20_000
