"""Ratings storage and sessions: resume, concurrent writers, refusals, blind clips."""
import sqlite3
import threading

import numpy as np
import pytest
from fixtures_circor import make_circor

from hldm.audio.features import TARGET_RMS
from hldm.clinical.vocabulary import SAMPLE_RATE
from hldm.paths import REPO
from hldm.ratings.session import (SECONDS_RANGE, plan_clips, real_recordings, render, resume_or_start,
                                  simulator_source, start_session)
from hldm.ratings.store import SCHEMA_VERSION, Answer, RatingsError, RatingStore

SRC = simulator_source()
ANSWER = Answer(said_real=False, plausibility=4, murmur="present", timing="holosystolic", grade=3, location="MV")


@pytest.fixture
def db(tmp_path):
    return tmp_path / "ratings.sqlite"


@pytest.fixture
def store(db):
    s = RatingStore(db)
    s.add_reader("alice")
    yield s
    s.close()


def test_new_database_is_versioned_wal(store, db):
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_reader_names(store):
    assert store.add_reader("ALICE") == store.reader("alice")  # one reader, any case
    for bad in ("", "   ", "x" * 65, "a\nb"):
        with pytest.raises(RatingsError, match="reader"):
            store.add_reader(bad)
    assert [r.name for r in store.readers()] == ["alice"]


def test_unknown_reader_refused_and_nothing_written(store):
    with pytest.raises(RatingsError, match="unknown 'bob'.*known: alice"):
        start_session(store, "bob", 3, SRC, seed=1)
    with pytest.raises(RatingsError, match="unknown 'bob'"):
        store.sessions("bob")
    assert store.sessions() == []


def test_resume_after_reopening(db):
    with RatingStore(db) as s:
        s.add_reader("alice")
        session, resumed = resume_or_start(s, "alice", 5, SRC, seed=7)
        assert not resumed
        order = [c.id for c in s.clips(session.id)]
        for _ in range(2):
            s.record_answer(session.id, s.next_clip(session.id).id, ANSWER)
    with RatingStore(db) as s:
        again, resumed = resume_or_start(s, "alice", 5, SRC, seed=99)
        assert resumed and again.id == session.id and again.n_answered == 2
        assert [c.id for c in s.clips(session.id)] == order
        assert s.next_clip(session.id).id == order[2]
        for cid in order[2:]:
            s.record_answer(session.id, s.next_clip(session.id).id, ANSWER)
        assert s.next_clip(session.id) is None and s.session(session.id).done
        assert s.open_session("alice") is None
        assert len(s.answer_rows()) == 5


def test_duplicate_answer_refused_first_kept(store):
    session = start_session(store, "alice", 2, SRC, seed=1)
    clip = store.next_clip(session.id)
    store.record_answer(session.id, clip.id, ANSWER)
    with pytest.raises(RatingsError, match="already answered"):
        store.record_answer(session.id, clip.id, Answer(True, 1, "absent"))
    rows = store.answer_rows()
    assert len(rows) == 1 and rows[0].plausibility == 4 and not rows[0].said_real


def test_clip_of_another_session_refused(store):
    a = start_session(store, "alice", 2, SRC, seed=1)
    b = start_session(store, "alice", 2, SRC, seed=2)
    with pytest.raises(RatingsError, match="not a clip of session"):
        store.record_answer(a.id, store.next_clip(b.id).id, ANSWER)
    assert store.answer_rows() == []


@pytest.mark.parametrize("bad, field", [
    (Answer(False, 6, "absent"), "plausibility"),
    (Answer(False, 3.5, "absent"), "plausibility"),
    (Answer("yes", 3, "absent"), "said_real"),
    (Answer(False, 3, "maybe"), "murmur"),
    (Answer(False, 3, "present", timing="systolic"), "timing"),
    (Answer(False, 3, "present", timing="early-diastolic", grade=5), "grade"),
    (Answer(False, 3, "absent", timing="holosystolic"), "timing"),
    (Answer(False, 3, "absent", location="apex"), "location"),
])
def test_invalid_answer_refused(store, bad, field):
    session = start_session(store, "alice", 1, SRC, seed=1)
    with pytest.raises(RatingsError, match=field):
        store.record_answer(session.id, store.next_clip(session.id).id, bad)
    assert store.answer_rows() == []


def test_two_threads_write_concurrently(db):
    shared = RatingStore(db)
    shared.add_reader("alice")
    shared.add_reader("bob")
    other = RatingStore(db)  # a second store on the same file, as a second app process would have
    sessions = {name: start_session(shared, name, 40, SRC, seed=3) for name in ("alice", "bob")}
    errors = []

    def rate(store, name):
        try:
            s = sessions[name]
            while (clip := store.next_clip(s.id)) is not None:
                store.record_answer(s.id, clip.id, ANSWER)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=rate, args=(shared, "alice")), threading.Thread(target=rate, args=(other, "bob")),
               threading.Thread(target=rate, args=(shared, "bob"))]  # bob's clips from two threads at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    rows = shared.answer_rows()
    shared.close()
    dup = [e for e in errors if "already answered" in str(e)]
    assert errors == dup  # racing on the same clip is refused cleanly, nothing else fails
    assert len(rows) == 80 and len({(r.session_id, r.clip_key) for r in rows}) == 80


def _valid_db(path):
    with RatingStore(path) as s:
        s.add_reader("alice")
        session = start_session(s, "alice", 30, SRC, seed=1)
        for c in s.clips(session.id):
            s.record_answer(session.id, c.id, ANSWER)
    return path.read_bytes()


def _damaged(path):
    data = bytearray(_valid_db(path))
    page = int.from_bytes(data[16:18], "big")
    data[page * 2: page * 2 + 64] = b"\xff" * 64  # the second page's header: a b-tree page with nonsense
    return bytes(data)


@pytest.mark.parametrize("content, message", [
    (b"this is not a database at all, just some text\n" * 10, "not an SQLite database"),
    ("damaged", "damaged"),
])
def test_corrupt_file_refused_and_untouched(tmp_path, content, message):
    db = tmp_path / "ratings.sqlite"
    data = _damaged(tmp_path / "src.sqlite") if content == "damaged" else content
    db.write_bytes(data)
    with pytest.raises(RatingsError, match=f"{message}.*left untouched"):
        RatingStore(db)
    assert db.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ratings")) == ["ratings.sqlite"]


def test_foreign_or_newer_database_refused(tmp_path):
    foreign = tmp_path / "other.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.commit()
    con.close()
    before = foreign.read_bytes()
    with pytest.raises(RatingsError, match="not a ratings database"):
        RatingStore(foreign)
    assert foreign.read_bytes() == before
    newer = tmp_path / "newer.sqlite"
    _valid_db(newer)
    con = sqlite3.connect(newer)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(RatingsError, match="newer"):
        RatingStore(newer)


def test_path_refusals(tmp_path):
    with pytest.raises(RatingsError, match="inside the repository"):
        RatingStore(REPO / "ratings.sqlite")
    with pytest.raises(RatingsError, match="is a folder"):
        RatingStore(tmp_path)
    with pytest.raises(RatingsError, match="does not exist"):
        RatingStore(tmp_path / "missing" / "r.sqlite")


def test_same_seed_same_clips_other_order(store):
    store.add_reader("bob")
    a = start_session(store, "alice", 12, SRC, seed=5)
    b = start_session(store, "bob", 12, SRC, seed=5)
    ka, kb = ([c.key for c in store.clips(s.id)] for s in (a, b))
    assert sorted(ka) == sorted(kb) and ka != kb
    c = start_session(store, "alice", 12, SRC, seed=6)
    assert not set(ka) & {x.key for x in store.clips(c.id)}
    with pytest.raises(RatingsError, match="n_clips"):
        start_session(store, "alice", 0, SRC)


def test_real_and_synthetic_clips_are_blinded(store, tmp_path):
    root = make_circor(tmp_path / "circor")
    real = real_recordings(root)
    assert {r.real_id for r in real} == {"1001_AV", "1001_PV", "1001_TV", "1001_MV", "1002_AV", "1002_MV_1",
                                          "1002_MV_2", "1004_AV", "1005_PV", "1005_MV"}  # unknown and Phc left out
    session = start_session(store, "alice", 8, SRC, root, seed=2)
    clips = store.clips(session.id)
    assert sorted(c.source for c in clips) == ["real"] * 4 + ["synthetic"] * 4
    for c in clips:
        audio = render(c, SRC)
        assert SECONDS_RANGE[0] <= len(audio) / SAMPLE_RATE <= SECONDS_RANGE[1]
        assert len(audio) == round(c.seconds * SAMPLE_RATE)
        assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) == pytest.approx(TARGET_RMS, rel=0.05)
        assert abs(audio[0]) < 1e-6 and abs(audio[-1]) < 1e-6 and np.abs(audio).max() <= 0.99 + 1e-6
    synth = next(c for c in clips if c.source == "synthetic")
    assert np.array_equal(render(synth, SRC), render(synth, SRC))  # replays identically on resume
    with pytest.raises(RatingsError, match="generator 'simulator'"):
        render(synth, None)


def test_real_dir_without_audio_refused(store, tmp_path):
    root = make_circor(tmp_path / "circor")
    for p in list(root.glob("*.wav")) + list(root.glob("*.flac")):
        p.unlink()
    with pytest.raises(RatingsError, match="no usable recording"):
        start_session(store, "alice", 4, SRC, root)
    with pytest.raises(RatingsError, match="real dir"):
        real_recordings(tmp_path / "nowhere")
    assert store.sessions() == []


def test_plan_is_a_function_of_the_seed():
    a, b = plan_clips(10, 3, "simulator"), plan_clips(10, 3, "simulator")
    assert [c.key for c in a] == [c.key for c in b]
    assert all(c.seconds * 2 == int(c.seconds * 2) for c in a)
