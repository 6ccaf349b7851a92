"""The blind A/B page in a real browser: Debian's chromium, driven by Playwright, against the
`evolvedirector ab` command itself (a real uvicorn server on 127.0.0.1, a free port)."""

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from evolvedirector.store import Store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags chromium keeps trying to reach Google's services,
# which a closed network refuses, slowly.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason="chromium is missing: install Debian's chromium (apt-get install -y chromium; `make test` does it as root)",
)


def start_ab(run_dir: Path) -> tuple[subprocess.Popen, str, list[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "evolvedirector.cli", "ab", str(run_dir), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    lines: "queue.Queue[str]" = queue.Queue()
    printed: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=90)
        except queue.Empty:
            process.kill()
            pytest.fail(f"`evolvedirector ab` printed no address: {printed}")
        printed.append(line)
        if match := re.search(r"open (http://127\.0\.0\.1:\d+/\?token=[\w-]+)", line):
            return process, match.group(1), printed


def test_votes_with_the_keyboard_land_in_the_store_and_the_report(run_copy):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    process, url, printed = start_ab(run_copy)
    token = url.split("token=")[1]
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                page = browser.new_page()
                page.goto(url)

                def wait_until(**attributes: str) -> None:
                    # A selector, not a JS predicate: the page's CSP forbids eval, which predicates need.
                    selector = "body" + "".join(f'[data-{k}="{v}"]' for k, v in attributes.items())
                    page.wait_for_selector(selector, state="attached", timeout=30_000)

                wait_until(state="ready", shown="1")
                assert "token" not in page.url  # taken out of the address bar
                first_prompt = page.text_content("#prompt")
                assert page.evaluate("document.getElementById('left').naturalWidth") > 0

                page.keyboard.press("ArrowLeft")
                wait_until(state="ready", votes="1")
                page.keyboard.press("s")  # skip: a new pair, no vote
                wait_until(state="ready", shown="3", votes="1")
                page.keyboard.press(" ")
                wait_until(state="ready", votes="2")
                page.keyboard.press("ArrowRight")
                wait_until(state="ready", votes="3")
                assert page.text_content("#status") == "3 votes stored"
            finally:
                browser.close()
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: uvicorn shuts down and the report is rebuilt
        output, _ = process.communicate(timeout=60)
        printed.append(output)
    assert process.returncode == 0, "".join(printed)

    votes = Store(run_copy / "evolve.db").votes()
    assert len(votes) == 3
    first, tie, last = votes
    assert first["prompt"] == first_prompt
    assert first["preferred"] == ("student" if first["student_side"] == "left" else "teacher")
    assert tie["preferred"] == "tie"
    assert last["preferred"] == ("student" if last["student_side"] == "right" else "teacher")

    report = (run_copy / "report.html").read_text()
    assert "Blind human preference" in report and "3 votes" in report
    # The token was printed once, in the address, and is written nowhere in the run folder.
    assert "".join(printed).count(token) == 1
    for path in run_copy.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
