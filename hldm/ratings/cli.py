"""`python -m hldm ratings report|list`: reports from the ratings database without the app.

    python -m hldm ratings report [--db PATH] [--csv answers.csv]   Markdown tables on stdout
    python -m hldm ratings list [--db PATH]                         readers and sessions
"""
from __future__ import annotations

import argparse
import sys

from hldm.ratings.stats import make_report, report_markdown, write_csv
from hldm.ratings.store import RatingsError, RatingStore, default_db_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hldm ratings", description="expert rating sessions")
    sub = ap.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="clinical validity, detection accuracy, agreement (Markdown)")
    rep.add_argument("--csv", help="also write one line per answer to this CSV file")
    rep.add_argument("--title", default="Rating report")
    lst = sub.add_parser("list", help="readers and sessions with their progress")
    for p in (rep, lst):
        p.add_argument("--db", default=None, help=f"ratings database (default {default_db_path()})")
    args = ap.parse_args(argv)
    path = args.db if args.db is not None else default_db_path()
    try:
        with RatingStore(path) as store:
            if args.command == "report":
                rows = store.answer_rows()
                print(report_markdown(make_report(rows), args.title))
                if args.csv:
                    print(f"\nwrote {len(rows)} answers to {write_csv(rows, args.csv)}", file=sys.stderr)
            else:
                print(f"database: {store.path}")
                print(f"readers: {', '.join(r.name for r in store.readers()) or '(none)'}")
                print("| session | reader | seed | answered | clips | created |\n|---|---|---|---|---|---|")
                for s in store.sessions():
                    print(f"| {s.id} | {s.reader} | {s.seed} | {s.n_answered} | {s.n_clips} | {s.created_at} |")
    except (RatingsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
