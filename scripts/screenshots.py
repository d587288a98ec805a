"""Screenshots of the app for the README: the main view after *Generate* and the What-if view.

    .venv/bin/python scripts/screenshots.py --checkpoint checkpoints/default [--out docs/screenshots]

Serves the app (hldm.app.studio) in this process on a free loopback port, drives Debian's headless Chromium
(/usr/bin/chromium) with Playwright through a mitral-regurgitation case, and writes
main.png and what_if.png as palette PNGs (small enough to commit). Without a checkpoint
the app runs its untrained demo model and the screenshots show its banner.
"""
from __future__ import annotations

import argparse
import io
import socket
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hldm.app.studio import build_app, launch, load_pipeline  # noqa: E402
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
    """Re-encode a screenshot as a 256-colour palette PNG (UI colours survive; a third of the size)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    return path.stat().st_size


def choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.locator("ul[role=listbox] li", has_text=option).first.click()


def take(url: str, out: Path, condition: str, new_grade: str) -> dict[str, int]:
    from playwright.sync_api import sync_playwright

    sizes = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
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
        browser.close()
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    ap.add_argument("--condition", default="mitral regurgitation")
    ap.add_argument("--new-grade", default="IV", help="the what-if: grade changed to this value")
    args = ap.parse_args(argv)
    pipeline, banner = load_pipeline(args.checkpoint)
    if banner:
        print(f"WARNING: {banner} (looked in {args.checkpoint}); the screenshots will show it", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="hldm-screenshots-") as tmp:
        ratings = RatingStore(default_db_path(tmp))  # the Rate tab needs a database; this one is thrown away
        port = free_port()
        demo = build_app(pipeline, banner, ratings)
        launch(demo, "127.0.0.1", port, block=False)
        try:
            sizes = take(f"http://127.0.0.1:{port}", args.out, args.condition, args.new_grade)
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
