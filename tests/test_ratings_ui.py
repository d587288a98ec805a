"""The Rate tab's handlers inside a real gr.Blocks: start, rate three clips, see them counted."""
import gradio as gr
import numpy as np
import pytest
from fixtures_circor import make_circor

from hldm.ratings.session import pipeline_source, simulator_source
from hldm.ratings.store import RatingStore
from hldm.ratings.ui import NOT_SURE, build_rating_tab


@pytest.fixture
def tab(tmp_path):
    store = RatingStore(tmp_path / "ratings.sqlite")
    with gr.Blocks() as demo, gr.Tab("Rate"):
        h = build_rating_tab(simulator_source(), store, real_dir=make_circor(tmp_path / "circor"))
    assert any(getattr(b, "elem_id", None) == "rate_submit" for b in demo.blocks.values())
    yield h
    store.close()


def test_rate_three_clips_and_see_them_counted(tab):
    with pytest.raises(gr.Error, match="unknown 'dr who'"):
        tab.start("dr who", 3, 1, False)
    assert "registered" in tab.register("dr who")
    state, audio, progress, note, *form = tab.start("dr who", 4, 1, False)
    assert "Clip 1 of 4" in progress and form == [None, None, None, NOT_SURE, NOT_SURE, NOT_SURE]
    sr, x = audio
    assert sr == 8000 and x.dtype == np.int16 and 4.0 <= len(x) / sr <= 10.0
    assert set(state) == {"session", "reader", "clip"}  # nothing about the clip's source reaches the browser
    with pytest.raises(gr.Error, match="Answer real or synthetic"):
        tab.submit(state, None, 4, "absent", NOT_SURE, NOT_SURE, NOT_SURE)
    answers = [("real", 4, "present", "holosystolic", 3, "MV"), ("synthetic", 2, "absent", NOT_SURE, 2, NOT_SURE),
               ("synthetic", 5, "present", NOT_SURE, NOT_SURE, "AV")]
    for k, a in enumerate(answers):
        prev = state
        state, audio, progress, note, *_ = tab.submit(state, *a)
        assert "stored" in note and f"Clip {k + 2} of 4" in progress
    again = tab.submit(prev, *answers[-1])  # a double click on the same clip
    assert "already answered" in again[3]
    md, img = tab.report()
    assert "3 answers from 1 reader(s) (dr who)" in md and img.ndim == 3
    rows = tab.store.answer_rows()
    assert rows[1].grade is None and rows[1].timing is None  # murmur "absent": grade ignored
    # a new visit resumes at clip 4, then the session completes
    state, _, progress, *_ = tab.start("DR WHO", 10, None, False)
    assert "Clip 4 of 4" in progress
    state, audio, progress, *_ = tab.submit(state, "real", 3, "absent", NOT_SURE, NOT_SURE, NOT_SURE)
    assert audio is None and "complete" in progress
    with pytest.raises(gr.Error, match="Start a session first"):
        tab.submit(state, "real", 3, "absent", NOT_SURE, NOT_SURE, NOT_SURE)
    assert tab.export_csv().endswith("ratings.csv")


def test_study_seed_blank_draws_fresh_clips_a_number_repeats_them(tab):
    tab.register("a")
    seeds = [tab.store.session(tab.start("a", 2, seed, True)[0]["session"]).seed for seed in ("", " ", "12", 12)]
    assert seeds[0] != seeds[1] and seeds[2:] == [12, 12]
    with pytest.raises(gr.Error, match="study seed: '-3' is not a whole number"):
        tab.start("a", 2, "-3", True)


def test_tiny_pipeline_as_generator():
    from hldm.models.hldm import HLDMConfig
    from hldm.pipeline import HLDMPipeline
    from hldm.ratings.session import render
    from hldm.ratings.store import ClipSpec

    a, b = HLDMPipeline.from_config(HLDMConfig.tiny(), seed=0), HLDMPipeline.from_config(HLDMConfig.tiny(), seed=1)
    src = pipeline_source(a, steps=2)
    assert src.checkpoint.split("/")[1:] == ["dpmpp", "2", "3"] or src.checkpoint.count("/") == 3
    assert src.checkpoint != pipeline_source(b, steps=2).checkpoint  # other weights
    assert src.checkpoint != pipeline_source(a, steps=3).checkpoint  # other settings
    clip = ClipSpec("synthetic", 4.0, {"murmur": "absent", "location": "MV"}, seed=3, checkpoint=src.checkpoint)
    audio = render(clip, src)
    assert audio.shape == (16000,) and np.isfinite(audio).all()
