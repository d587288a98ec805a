"""Screenshots of the app for the README: the main view after *Generate* and the What-if view; with
--course, the Course tab instead: a case after *Check*, a screening report and the progress view.

    .venv/bin/python scripts/screenshots.py --checkpoint checkpoints/default [--out docs/screenshots]
    .venv/bin/python scripts/screenshots.py --course [--case-tries 3] [--screening-seed 1]
    .venv/bin/python scripts/screenshots.py --upload [--upload-grade V]

Serves the app (hldm.app.studio) in this process on a free loopback port, drives Debian's headless Chromium
(/usr/bin/chromium) with Playwright through a mitral-regurgitation case, and writes
main.png and what_if.png as palette PNGs (small enough to commit); --course and --upload take the
Course tab's and the Your recording tab's instead. Without a checkpoint
the app runs its untrained demo model and the screenshots show its banner.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import socket
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hldm.app.studio import build_app, launch, load_course, load_pipeline  # noqa: E402
from hldm.paths import DEFAULT_CHECKPOINT  # noqa: E402
from hldm.ratings.store import RatingStore, default_db_path  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
VIEWPORT = {"width": 1280, "height": 900}
TIMEOUT_MS = 600_000  # a full-size model on a CPU takes a while per clip
MAX_BYTES = 300_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_png(png: bytes, path: Path) -> int:
    """Re-encode a screenshot as a 256-colour palette PNG (UI colours survive; a third of the size), or a
    128-colour one where that is still over MAX_BYTES (noisy spectrograms)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    for colors in (256, 128):
        img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
        img.save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES:
            break
    return path.stat().st_size


def choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    # the whole option, not a part of another ("V" in "IV"); a selected one carries a check mark before it
    page.locator("ul[role=listbox] li").filter(has_text=re.compile(rf"(^|\s){re.escape(option)}\s*$")).first.click()


@contextlib.contextmanager
def browser_page(url: str):
    """A headless Chromium page on `url` (closed on exit)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        try:
            yield page
        finally:
            browser.close()


def take(url: str, out: Path, condition: str, new_grade: str) -> dict[str, int]:
    sizes = {}
    with browser_page(url) as page:
        page.wait_for_selector("#l2 textarea")
        choose(page, "condition", condition)
        page.wait_for_function(f"document.querySelector('#l3 textarea').value.includes({condition!r})")
        page.click("#generate_btn")
        page.wait_for_selector("#spectrogram img[src]")
        page.wait_for_selector("#audio_8k a[download]")
        sizes["main"] = small_png(page.screenshot(full_page=True), out / "main.png")

        page.get_by_role("tab", name="What-if").click()
        choose(page, "wi_value", new_grade)
        page.click("#wi_btn")
        page.wait_for_selector("#wi_image img[src]")
        page.locator("#wi_deltas").filter(has_text="Changed findings").wait_for()
        page.locator("#wi_b a[download]").wait_for()
        sizes["what_if"] = small_png(page.screenshot(full_page=True), out / "what_if.png")
    return sizes


def take_upload(url: str, out: Path, condition: str, new_grade: str) -> dict[str, int]:
    """The Your recording tab: a simulator recording of the condition's typical findings (16-bit WAV at
    4 kHz as CirCor's; no real recording's picture is committed) described by picking the condition,
    segmented, then its murmur edited to `new_grade`."""
    import soundfile as sf

    from hldm.clinical.validation import validate_dict
    from hldm.data.simulator import simulate

    typical = validate_dict({"condition": condition})
    with tempfile.TemporaryDirectory(prefix="hldm-upload-") as tmp, browser_page(url) as page:
        wav = Path(tmp) / "patient.wav"
        sf.write(wav, simulate(typical, seconds=8.0, seed=4, noise_level=0.02).audio, 4000, subtype="PCM_16")
        page.wait_for_selector("#l2 textarea")
        choose(page, "condition", condition)
        page.wait_for_function(f"document.querySelector('#l3 textarea').value.includes({condition!r})")
        page.get_by_role("tab", name="Your recording").click()
        page.set_input_files("#upload_file input[type=file]", str(wav))
        page.locator("#upload_status").filter(has_text="Segmented").wait_for()
        page.wait_for_selector("#upload_spec img[src]")
        choose(page, "up_grade", new_grade)
        page.click("#up_btn")
        page.wait_for_selector("#upload_whatif img[src]")
        page.locator("#upload_deltas").filter(has_text="re S1/S2").wait_for()
        # from the tab bar down: the findings above it are the main view's
        top = page.get_by_role("tab", name="Your recording").bounding_box()["y"] + page.evaluate("window.scrollY") - 8
        height = page.evaluate("document.documentElement.scrollHeight") - top
        shot = page.screenshot(full_page=True, clip={"x": 0, "y": top, "width": VIEWPORT["width"], "height": height})
        return {"own_recording": small_png(shot, out / "own_recording.png")}


def radio(page, elem_id: str, label: str) -> None:
    page.locator(f"#{elem_id} label").filter(has_text=label).first.click()


def take_course(url: str, out: Path, screening_seed: int) -> dict[str, int]:
    """A learner practises one case, takes a whole screening test (answering the first question, and the
    diagnosis on every other case), then opens the progress view."""
    sizes = {}
    with browser_page(url) as page:
        page.get_by_role("tab", name="Course", exact=True).click()
        page.fill("#course_name input, #course_name textarea", "student-01")
        page.click("#course_sign_in")
        page.locator("#course_who").filter(has_text="Signed in").wait_for()
        page.get_by_role("tab", name="Screening test").click()
        page.fill("#screen_seed input", str(screening_seed))
        page.click("#screen_start")
        for k in range(20):
            page.locator("#screen_header").filter(has_text=f"case {k + 1} of 20").wait_for()
            radio(page, "sq_category", ("pathological", "normal", "innocent", "pathological")[k % 4])
            if k % 2 == 0:
                choose(page, "sq_diagnosis", ("aortic stenosis", "mitral regurgitation", "normal")[k % 3])
            page.click("#screen_submit")
        page.locator("#screen_report").filter(has_text="Screening report").wait_for()
        page.wait_for_selector("#screen_plot img[src]")
        sizes["course_screening"] = small_png(page.screenshot(full_page=True), out / "course_screening.png")
        page.get_by_role("tab", name="Practice").click()
        page.click("#course_next")
        page.wait_for_selector("#course_half audio[src]")
        radio(page, "cq_category", "pathological")
        choose(page, "cq_timing", "holosystolic")
        choose(page, "cq_diagnosis", "mitral regurgitation")
        page.click("#course_check")
        page.wait_for_selector("#course_spec img[src]")
        sizes["course_case"] = small_png(page.screenshot(full_page=True), out / "course_case.png")
        page.get_by_role("tab", name="Progress").click()
        page.click("#progress_show")
        page.wait_for_selector("#progress_plot img[src]")
        sizes["course_progress"] = small_png(page.screenshot(full_page=True), out / "course_progress.png")
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    ap.add_argument("--condition", default="mitral regurgitation")
    ap.add_argument("--new-grade", default="IV", help="the what-if: grade changed to this value")
    ap.add_argument("--course", action="store_true", help="the Course tab's screenshots instead")
    ap.add_argument("--upload", action="store_true", help="the Your recording tab's screenshot instead")
    ap.add_argument("--upload-grade", default="V", help="--upload: the recording's murmur edited to this grade")
    ap.add_argument("--case-tries", type=int, default=3, help="model draws per course case (0: simulator only)")
    ap.add_argument("--screening-seed", type=int, default=1)
    args = ap.parse_args(argv)
    pipeline, banner = load_pipeline(args.checkpoint)
    if banner:
        print(f"WARNING: {banner} (looked in {args.checkpoint}); the screenshots will show it", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="hldm-screenshots-") as tmp:
        ratings = RatingStore(default_db_path(tmp))  # the Rate and Course tabs' databases are thrown away
        course = load_course(pipeline, Path(tmp), max_tries=args.case_tries)
        port = free_port()
        demo = build_app(pipeline, banner, ratings, course=course)
        launch(demo, "127.0.0.1", port, block=False)
        url = f"http://127.0.0.1:{port}"
        try:
            if args.course:
                sizes = take_course(url, args.out, args.screening_seed)
            elif args.upload:
                sizes = take_upload(url, args.out, args.condition, args.upload_grade)
            else:
                sizes = take(url, args.out, args.condition, args.new_grade)
        finally:
            demo.close()
            ratings.close()
    for name, size in sizes.items():
        print(f"{args.out / name}.png: {size / 1000:.0f} kB")
    too_big = [name for name, size in sizes.items() if size > MAX_BYTES]
    if too_big:
        print(f"error: {', '.join(too_big)} over {MAX_BYTES // 1000} kB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
