"""H-LDM Studio: the clinician app (Gradio). Thin over `hldm.pipeline.HLDMPipeline`.

    python app.py [--host 127.0.0.1] [--port 7860] [--checkpoint checkpoints/default]
                  [--data-dir DIR] [--real-dir CIRCOR_FOLDER]

The page, one module per tab, is in hldm/app (see its __init__). Binds to loopback by default,
never creates share links, sends no telemetry. With no trained checkpoint installed it still
serves every tab, on an untrained tiny model, and says so in a banner.
"""
from __future__ import annotations

import os

# Before gradio is imported: no telemetry, no downloads, no GUI backend.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from hldm.app.studio import BackgroundPipeline, build_app, launch, load_course, load_pipeline  # noqa: E402
from hldm.models.checkpoint import CheckpointError  # noqa: E402
from hldm.paths import DEFAULT_CHECKPOINT  # noqa: E402
from hldm.ratings.session import real_recordings  # noqa: E402
from hldm.ratings.store import RatingsError, RatingStore, default_db_path  # noqa: E402
from hldm.sqlite_store import StoreError  # noqa: E402
from hldm.teaching.cases import MAX_TRIES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="H-LDM Studio clinician app")
    ap.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                    help="pipeline directory (default: %(default)s)")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help=f"where the ratings and course databases live (default: {default_db_path().parent})")
    ap.add_argument("--real-dir", type=Path, default=None,
                    help="CirCor-layout folder of real recordings mixed blind into rating sessions")
    ap.add_argument("--case-tries", type=int, default=MAX_TRIES, choices=range(0, 11), metavar="0..10",
                    help="model draws per course case before the simulator stands in (default %(default)s)")
    args = ap.parse_args(argv)
    try:  # a bad ratings database or real folder stops here, before any model is loaded
        ratings = RatingStore(default_db_path(args.data_dir))
        real = real_recordings(args.real_dir) if args.real_dir else None
    except RatingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()

    def ready(error: BaseException | None) -> None:
        if error is None:
            print(f"model ready in {time.perf_counter() - start:.1f} s", flush=True)
        else:
            print(f"error: the model could not be loaded: {error}", file=sys.stderr, flush=True)

    try:
        pipeline, banner = load_pipeline(args.checkpoint, on_ready=ready)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if banner:
        print(f"WARNING: {banner} (looked in {args.checkpoint})", file=sys.stderr)
    try:
        course = load_course(pipeline, args.data_dir, max_tries=args.case_tries)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"H-LDM Studio on http://{args.host}:{args.port}  (device: {pipeline.device}; ratings: {ratings.path}"
          f"{f'; {len(real)} real recordings' if real else ''})", flush=True)
    launch(build_app(pipeline, banner, ratings, real, course), args.host, args.port,
           serving=pipeline.start if isinstance(pipeline, BackgroundPipeline) else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
