"""Crash safety: a process recording answers is SIGKILLed; nothing it reported as stored is lost."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from hldm.paths import REPO
from hldm.ratings.store import ClipSpec, RatingStore

# Records answers one by one, printing each clip id once record_answer has returned.
WORKER = """
import sys, time
from hldm.ratings.store import Answer, RatingStore
store = RatingStore(sys.argv[1])
session, pause = int(sys.argv[2]), float(sys.argv[3])
while (clip := store.next_clip(session)) is not None:
    store.record_answer(session, clip.id, Answer(False, 4, "present", "holosystolic", 3, "MV"))
    print(clip.id, flush=True)
    time.sleep(pause)
print("done", flush=True)
"""
N_CLIPS = 400


def _run_and_kill(db, session_id: int, pause: float, after: int) -> list[int]:
    """Start a worker, SIGKILL it once it has reported `after` more answers; the ids it reported."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(db), str(session_id), str(pause)],
                            stdout=subprocess.PIPE, text=True, env=env)
    reported = []
    deadline = time.monotonic() + 60
    while len(reported) < after and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line or line.strip() == "done":
            break
        reported.append(int(line))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    reported += [int(x) for x in proc.stdout.read().split() if x != "done"]  # printed before the kill landed
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "the worker finished before it could be killed"
    return reported


@pytest.fixture
def session(tmp_path):
    db = tmp_path / "ratings.sqlite"
    with RatingStore(db) as s:
        s.add_reader("alice")
        clips = [ClipSpec("synthetic", 4.0, {"murmur": "absent"}, seed=k, checkpoint="simulator")
                 for k in range(N_CLIPS)]
        sid = s.create_session("alice", clips, seed=0).id
    return db, sid


def test_sigkill_between_and_during_answers_loses_nothing(session):
    db, sid = session
    reported = []
    # between answers (the worker sleeps after each), then at arbitrary moments (no pause: mid-transaction too)
    for pause, after in ((0.05, 5), (0.05, 12), (0.0, 40), (0.0, 25)):
        reported += _run_and_kill(db, sid, pause, after)
        with RatingStore(db) as s:  # reopens cleanly after each kill (the WAL left behind is recovered)
            answered = [r.clip_key for r in s.answer_rows()]
            positions = {c.id: c.position for c in s.clips(sid)}
            assert s.next_clip(sid).position == len(answered)  # resume where it stopped
        con = sqlite3.connect(db)
        stored = {r[0] for r in con.execute("SELECT clip_id FROM answers")}
        con.close()
        assert set(reported) <= stored  # every answer the worker saw stored is there
        assert len(answered) - len(reported) in (0, 1)  # at most the one committed just before the kill
        assert len(set(answered)) == len(answered)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == len(answered)
    assert {positions[r[0]] for r in con.execute("SELECT clip_id FROM answers")} == set(range(len(answered)))
    con.close()
