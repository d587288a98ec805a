"""The app in a real headless Chromium (Debian's /usr/bin/chromium via Playwright; never `playwright install`).

One walk through what a clinician does: pick a condition, generate, play, run a
what-if, upload a bad file. Screenshots land in the test's tmp dir; with
HLDM_UPDATE_SCREENSHOTS=1 the main and what-if views are also copied to
docs/screenshots/ for the README.
"""
import os
import shutil
import wave
from pathlib import Path

import pytest

from app_server import REPO, running_app, save_tiny_pipeline

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
TIMEOUT_MS = 60_000

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (`make chromium`) to run the browser test",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    with running_app(tmp, save_tiny_pipeline(tmp / "ckpt")) as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(app_url)
        pg.wait_for_selector("#l2 textarea")
        yield pg
        browser.close()


def _choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.locator("ul[role=listbox] li", has_text=option).first.click()


def _wav_rate(page, selector: str) -> int:
    """Follow the audio component's download link and read the WAV header it serves."""
    link = page.locator(f"{selector} a[download]")
    link.wait_for()
    resp = page.request.get(link.get_attribute("href"))
    assert resp.ok, resp.status
    body = resp.body()
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"hldm-browser-{os.getpid()}.wav"
    tmp.write_bytes(body)
    try:
        with wave.open(str(tmp)) as w:
            assert w.getnframes() > 0
            return w.getframerate()
    finally:
        tmp.unlink()


def _save(page, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("HLDM_UPDATE_SCREENSHOTS") == "1":
        out = REPO / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / f"{name}.png")


def test_choose_findings_generate_and_play(page, tmp_path):
    _choose(page, "condition", "mitral regurgitation")
    page.wait_for_function("document.querySelector('#l2 textarea').value.includes('holosystolic')")
    assert "mitral" in page.input_value("#l3 textarea").lower()
    page.fill("#steps input[type=number]", "4")
    page.click("#generate_btn")
    assert _wav_rate(page, "#audio_4k") == 4000
    assert _wav_rate(page, "#audio_8k") == 8000
    page.wait_for_selector("#spectrogram img[src]")
    assert "Generated" in page.inner_text("#gen_info")
    _save(page, tmp_path, "main")


def test_what_if_shows_both_spectrograms_and_audios(page, tmp_path):
    page.get_by_role("tab", name="What-if").click()
    page.click("#wi_btn")
    page.wait_for_selector("#wi_image img[src]")
    for elem in ("#wi_a", "#wi_b"):
        assert _wav_rate(page, elem) == 4000
    assert "murmur" in page.inner_text("#wi_deltas")
    _save(page, tmp_path, "what_if")


def test_bad_upload_is_refused_with_a_clear_message(page, tmp_path):
    page.get_by_role("tab", name="Your recording").click()
    fake = tmp_path / "not_audio.wav"
    fake.write_text("this is a text file, not a recording\n" * 20)
    page.set_input_files("#upload_file input[type=file]", str(fake))
    status = page.locator("#upload_status")
    status.filter(has_text="Upload refused").wait_for()
    assert "WAV or FLAC" in status.inner_text()
    _save(page, tmp_path, "upload_refused")
