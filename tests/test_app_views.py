"""The app's figures, its pure helpers and each tab's handlers: shapes, marks, and refusals of malformed input."""
import numpy as np
import pytest

from hldm import app_views
from hldm.audio.features import FEAT_OFFSET, FEAT_SCALE, FRAMES_PER_SECOND


def _features(t=250, seed=0):
    return np.random.default_rng(seed).normal(0.0, 0.3, size=(129, t)).astype(np.float32)


def _is_image(img):
    return img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and img.std() > 0


def test_features_db_is_20log10_of_the_magnitude():
    # A feature value f encodes ln|X| = f * FEAT_SCALE - FEAT_OFFSET.
    mag = np.full((129, 3), 0.1, dtype=np.float32)
    feat = (np.log(mag) + FEAT_OFFSET) / FEAT_SCALE
    assert np.allclose(app_views.features_db(feat), -20.0, atol=1e-3)


def test_spectrogram_marks_intervals_in_their_colours():
    feat = np.full((129, 250), -1.0, dtype=np.float32)  # uniform background: only marks add colour
    plain = app_views.spectrogram_image(feat, [], title="x")
    marked = app_views.spectrogram_image(feat, [(0.1, 0.2, "S1"), (0.4, 0.5, "S2"), (0.6, 1.2, "murmur")],
                                         title="x")
    assert _is_image(marked) and plain.shape == marked.shape

    def has(img, hex_color):
        rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
        return (np.abs(img.astype(int) - rgb).sum(axis=2) < 12).sum()

    for label, color in app_views.INTERVAL_COLORS.items():
        assert has(marked, color) > has(plain, color) + 50, label


def test_what_if_image_accepts_unequal_lengths_and_shows_three_panels():
    img = app_views.what_if_image(_features(250), _features(240, seed=1), [(0.0, 0.1, "S1")], [])
    single = app_views.spectrogram_image(_features(250))
    assert _is_image(img) and img.shape[1] > single.shape[1]


def test_what_if_difference_is_blank_for_identical_clips():
    f = _features()
    same = app_views.what_if_image(f, f)
    other = app_views.what_if_image(f, _features(seed=3))
    right = slice(2 * same.shape[1] // 3 + 20, same.shape[1] - 80)  # the difference panel's plot area
    assert same[60:-60, right].std() < other[60:-60, right].std()


def test_weights_and_attention_and_fusion_images():
    assert _is_image(app_views.weights_image(np.random.default_rng(0).random((20, 4))))
    assert _is_image(app_views.attention_image(np.eye(40), layer=1, step=3))
    assert _is_image(app_views.fusion_image({"text": 0.7, "graph": 0.3}))


@pytest.mark.parametrize("call", [
    lambda: app_views.spectrogram_image(np.zeros((64, 10))),
    lambda: app_views.weights_image(np.zeros((10, 3))),
    lambda: app_views.attention_image(np.zeros((4, 5))),
])
def test_malformed_arrays_are_refused_with_the_expected_shape(call):
    with pytest.raises(ValueError, match="expected"):
        call()


def test_frames_per_second_matches_the_time_axis():
    # A 2 s clip is 250 frames; the x extent must end at 2 s so marks in seconds line up.
    assert app_views._extent(int(2 * FRAMES_PER_SECOND))[1] == pytest.approx(2.0)


# ---------------------------------------------------------------- each tab's handlers on a tiny random pipeline

import gradio as gr  # noqa: E402
import soundfile as sf  # noqa: E402

import app  # noqa: E402
from hldm.app import common, studio  # noqa: E402
from hldm.app.common import findings_from_controls  # noqa: E402
from hldm.app.design import DesignHandlers, load_examples  # noqa: E402
from hldm.app.export import ExportHandlers  # noqa: E402
from hldm.app.generate import GenerateHandlers  # noqa: E402
from hldm.app.interpretability import InterpretabilityHandlers  # noqa: E402
from hldm.app.course import ANSWER_FIELDS, CourseHandlers  # noqa: E402
from hldm.app.upload import UPLOAD_MAX_SECONDS, UploadHandlers  # noqa: E402
from hldm.app.what_if import WhatIfHandlers  # noqa: E402
from hldm.clinical.vocabulary import CONDITIONS  # noqa: E402


class _NoProgress:
    def __call__(self, *args, **kwargs):
        pass

    def tqdm(self, iterable, *args, **kwargs):
        return iterable


MR = ["mitral regurgitation", "present", 3, "holosystolic", "plateau", "high", "blowing", "MV", "axilla", [],
      80, "adult", "male", 0, 0, False]
FAST = [0, 2, 2.0, "ddim", 2.0]  # seed, steps, guidance, sampler, seconds


@pytest.fixture(scope="module")
def pipeline():
    from hldm.models.hldm import HLDMConfig
    from hldm.pipeline import HLDMPipeline

    return HLDMPipeline.from_config(HLDMConfig.tiny())


@pytest.fixture(scope="module")
def design():
    return DesignHandlers()


def test_app_starts_on_the_untrained_model_with_a_banner_when_no_checkpoint(tmp_path):
    from hldm.ratings.store import RatingStore

    pipeline, banner = studio.load_pipeline(tmp_path / "empty")
    assert banner == studio.NO_CHECKPOINT_BANNER
    with RatingStore(tmp_path / "ratings.sqlite") as store:
        demo = studio.build_app(pipeline, banner, store)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"banner", "generate_btn", "wi_btn", "attn_plot", "upload_file", "course_next", "export_btn",
            "rate_start", "rate_report"} <= ids
    api = {name: [p["parameter_name"] for p in e["parameters"]]
           for name, e in demo.get_api_info()["named_endpoints"].items()}
    assert {"/generate", "/what_if", "/edit", "/export"} <= set(api)
    assert api["/generate"][:3] == ["condition", "murmur", "grade"]
    assert api["/generate"][-6:] == ["seed", "steps", "guidance", "sampler", "seconds", "conform"]
    assert api["/edit"][:2] == ["recording", "change"] and "strength" in api["/edit"]
    assert not [name for names in api.values() for name in names if name.startswith("param_")]


@pytest.mark.parametrize("args, message", [
    (["--real-dir", "{tmp}/no-audio"], "real dir"),
    (["--data-dir", "{tmp}/missing"], "does not exist"),
    (["--data-dir", "{tmp}/corrupt"], "not an SQLite database"),
])
def test_main_refuses_a_bad_data_or_real_dir_before_loading_a_model(tmp_path, capsys, args, message):
    (tmp_path / "no-audio").mkdir()
    (tmp_path / "no-audio" / "123.txt").write_text("123 4 4000\n")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "ratings.sqlite").write_bytes(b"not sqlite" * 100)
    argv = ["--data-dir", str(tmp_path), *[a.format(tmp=tmp_path) for a in args]]
    assert app.main(argv) == 2
    assert message in capsys.readouterr().err


def test_every_condition_prefills_valid_findings_and_prompts(design):
    for condition in CONDITIONS:
        values = design.prefill_condition(condition, *MR)
        assert values[0] == condition
        assert values[common.CONTROL_FIELDS.index("age_group")] == "adult"  # demographics kept
        l1, l2, l3, status = design.preview(*values)
        assert status.startswith("✓") and l2 and l3, (condition, status)


def test_contradictory_findings_are_reported_not_raised(design):
    bad = list(MR)
    bad[common.CONTROL_FIELDS.index("timing")] = "early-diastolic"
    bad[common.CONTROL_FIELDS.index("grade")] = 6  # diastolic grades stop at IV
    *_, status = design.preview(*bad)
    assert "not valid" in status and "grade" in status
    no_murmur = list(MR)
    no_murmur[common.CONTROL_FIELDS.index("murmur")] = "absent"  # mitral regurgitation always has one
    *_, status = design.preview(*no_murmur)
    assert "not valid" in status and "always has a murmur" in status


def test_l2_edit_is_parsed_back_or_refused_with_a_message(design):
    out = design.apply_l2("Grade IV/VI holosystolic plateau murmur, high-pitched, blowing, loudest at the mitral "
                            "area, radiating to the axilla.", *MR)
    assert out[common.CONTROL_FIELDS.index("grade")] == 4 and out[-1].startswith("✓")
    refused = design.apply_l2("Grade VI/IV early-diastolic decrescendo murmur.", *MR)
    assert "not applied" in refused[-1]
    assert all(isinstance(v, dict) for v in refused[:-1])  # gr.update(): controls untouched


def test_examples_all_validate(design):
    for ex in load_examples():
        values = design.load_example(ex["name"], *MR)
        assert design.preview(*values)[-1].startswith("✓"), ex["name"]


def test_generate_returns_4k_audio_an_8k_louder_copy_and_figures(pipeline):
    (sr4, a4), (sr8, a8), spec, info, interp = GenerateHandlers(pipeline).generate(None, *MR, *FAST, progress=_NoProgress())
    assert (sr4, sr8) == (4000, 8000) and len(a8) == 2 * len(a4) == 2 * 8000
    assert a4.dtype == a8.dtype == np.int16
    assert _is_image(spec) and "cpu" in info and "2 steps" in info and "seed 0" in info
    assert interp["weights"].shape == (2, 4)
    # the Interpretability tab draws its figures when opened: w_i, the first layer's M_cardiac, the layer list
    views = InterpretabilityHandlers(pipeline)
    w_img, attn_img, layer = views.interpretability(interp, None)
    assert _is_image(w_img) and _is_image(attn_img)
    assert layer["choices"] and layer["value"] == list(interp["attention"])[0]
    other = list(interp["attention"])[-1]
    assert _is_image(views.attention_layer(interp, other))
    assert views.interpretability(None, None)[:2] == (None, None)  # opened before any Generate
    assert _is_image(views.fusion())


def test_playback_copy_is_louder_8k_and_never_clips():
    t = np.arange(8000) / 4000
    quiet = (0.02 * np.sin(2 * np.pi * 50 * t) * (np.sin(2 * np.pi * 1.2 * t) > 0.9)).astype(np.float32)
    (sr, x) = common.playback_copy(quiet, 4000)
    rms = lambda a: float(np.sqrt(np.mean(np.square(a.astype(np.float64) / 32767))))  # noqa: E731
    assert sr == 8000 and len(x) == 2 * len(quiet)
    assert rms(x) > 3 * rms(quiet) and np.abs(x).max() < 32767
    loud = np.clip(np.random.default_rng(0).normal(0, 0.5, 8000), -1, 1).astype(np.float32)
    assert rms(common.playback_copy(loud, 4000)[1]) > 0.8 * float(np.sqrt(np.mean(loud.astype(np.float64) ** 2)))


def test_generate_refuses_out_of_range_settings(pipeline):
    handlers = GenerateHandlers(pipeline)
    with pytest.raises(gr.Error, match="steps"):
        handlers.generate(None, *MR, 0, common.MAX_STEPS + 1, 2.0, "ddim", 2.0, progress=_NoProgress())
    with pytest.raises(gr.Error, match="sampler"):
        handlers.generate(None, *MR, 0, 2, 2.0, "euler", 2.0, progress=_NoProgress())


def test_what_if_names_the_changed_field_and_every_subspace(pipeline):
    handlers = WhatIfHandlers(pipeline)
    img, (sra, a), (srb, b), md = handlers.what_if("grade", 5, True, None, *MR, *FAST, progress=_NoProgress())
    assert _is_image(img) and len(a) == len(b)
    assert "Changed findings: **grade**" in md
    assert all(name in md for name in ("rhythm", "s1s2", "murmur", "noise"))
    assert "| rhythm | 0.000 | held" in md and "| s1s2 | 0.000 | held" in md
    *_, free = handlers.what_if("grade", 5, False, None, *MR, *FAST, progress=_NoProgress())
    assert "held" not in free and "| rhythm | 0.000" not in free
    with pytest.raises(gr.Error, match="grade"):  # a diastolic grade V is refused, not generated
        handlers.what_if("timing", "early-diastolic", True, None, *MR[:2], 5, *MR[3:], *FAST, progress=_NoProgress())
    with pytest.raises(gr.Error, match="already III"):  # MR is grade III: nothing would change
        handlers.what_if("grade", 3, True, None, *MR, *FAST, progress=_NoProgress())
    assert "Before*:" not in md  # conformance off (the tiny model's default): nothing to report
    # the switch turns it on (a random model's clip: conformance says why it did nothing) ...
    *_, conformed = handlers.what_if("grade", 5, True, True, *MR, *FAST, progress=_NoProgress())
    _, _, _, info, _ = GenerateHandlers(pipeline).generate(True, *MR, *FAST, progress=_NoProgress())
    assert "*Before*: Left as the model made it" in conformed and "*After*: Left as the model made it" in conformed
    assert "Left as the model made it" in info
    # ... and off where the model's default is on
    pipeline.config.diffusion.conform = True
    try:
        *_, raw = handlers.what_if("grade", 5, True, False, *MR, *FAST, progress=_NoProgress())
        _, _, _, raw_info, _ = GenerateHandlers(pipeline).generate(False, *MR, *FAST, progress=_NoProgress())
    finally:
        pipeline.config.diffusion.conform = False
    assert "Before*:" not in raw and "Left as" not in raw_info


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"this is text, not audio\n" * 10, "not a readable"),
    ("silent", "silent"),
    ("nan", "NaN"),
    ("long", "long"),
])
def test_bad_uploads_are_refused_with_the_reason(pipeline, tmp_path, content, reason):
    path = tmp_path / "upload.wav"
    if content == "silent":
        sf.write(path, np.zeros(8000, dtype=np.float32), 4000)
    elif content == "nan":
        sf.write(path, np.full(8000, np.nan, dtype=np.float32), 4000, subtype="FLOAT")
    elif content == "long":
        sf.write(path, np.random.default_rng(0).normal(0, 0.1, int(4000 * (UPLOAD_MAX_SECONDS + 1))), 4000)
    else:
        path.write_bytes(content)
    box, state, play, spec, status = UploadHandlers(pipeline).upload(str(path))
    assert box is None and state is None  # a refused file leaves the box, ready for the next
    assert "Upload refused" in status and reason.lower() in status.lower(), status
    assert str(tmp_path) not in status  # the server's temp path is not the user's business


def test_upload_is_segmented_then_edited(pipeline, tmp_path):
    from hldm.data.simulator import simulate

    handlers = UploadHandlers(pipeline)
    path = tmp_path / "pcg.wav"
    f = findings_from_controls(*MR)
    sf.write(path, simulate(f, seconds=6.0, seed=2, noise_level=0.02).audio, 4000)
    box, audio, play, spec, status = handlers.upload(str(path), *MR)
    assert status.startswith("✓") and "Segmented" in status and "bpm" in status and _is_image(spec)
    img, (sr, edited), md = handlers.edit_upload(audio, "grade", 5, None, *MR, 0, 2, 2.0, "ddim",
                                                 progress=_NoProgress())
    assert _is_image(img) and sr == 4000 and len(edited) == len(audio)
    assert "grade III → V" in md and "re S1/S2" in md
    with pytest.raises(gr.Error, match="other phase"):
        handlers.edit_upload(audio, "timing", None, "early-diastolic", *MR, 0, 2, 2.0, "ddim", progress=_NoProgress())
    noise = tmp_path / "noise.wav"
    sf.write(noise, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 4000)
    box, audio, play, spec, status = handlers.upload(str(noise), *MR)
    assert audio is not None and "Cannot edit this recording" in status, status  # it still plays
    with pytest.raises(gr.Error, match="Cannot edit this recording"):
        handlers.edit_upload(audio, "remove", None, None, *MR, 0, 2, 2.0, "ddim", progress=_NoProgress())


def test_course_case_is_scored_stored_and_revealed_on_a_timeline(pipeline, tmp_path):
    from hldm.teaching.course import Course
    from hldm.teaching.course_store import CourseStore
    from hldm.teaching.scoring import category, description

    course = Course(pipeline, CourseStore(tmp_path / "course.sqlite"), tmp_path / "cases", verifier=None, seconds=3.0)
    h = CourseHandlers(course)
    learner, _ = h.sign_in("  Ana ")
    with pytest.raises(gr.Error, match="Sign in first"):
        h.practice_next(None, "Random cases")
    state, header, (sr, audio), (sr_half, half), note, *rest = h.practice_next(learner, "Random cases")
    assert sr == sr_half == 8000 and abs(len(half) - 2 * len(audio)) < 0.05 * len(audio)  # half speed, same rate
    assert "Simulator clip" in note and "no evaluator" in note
    f = state["findings"]
    present = f["murmur"] == "present"
    right = {"category": category(f), "description": description(f), "diagnosis": f["condition"],
             "location": f["location"], "extra_sounds": f["extra_sounds"],
             **{k: (f[k] if present else "none") for k in ("timing", "shape", "grade", "pitch", "quality")}}
    state, md, spec, timeline = h.practice_check(state, *[right[k] for k in ANSWER_FIELDS])
    assert "Score 100%" in md and _is_image(spec) and 'class="hldm-tl-iv hldm-tl-S1"' in timeline
    with pytest.raises(gr.Error, match="already answered|is answered"):
        h.practice_check(state, *[right[k] for k in ANSWER_FIELDS])
    text, plot, _ = h.progress(learner)
    assert "1 case(s) answered, mean score 100%" in text and _is_image(plot)

    state, question, (_, a), (_, b), note, *_ = h.drill_new(learner, "grade")
    assert question.startswith("### Which of the two is grade IV?") and len(a) == len(b) and "Simulator pair" in note
    _, verdict, both = h.drill_check(learner, state, state["pair"].drill.answer)
    assert verdict.startswith("**✓ Right") and _is_image(both)
    text, _, _ = h.progress(learner)
    assert "1 drill(s), 100% right" in text


def test_a_saved_set_exports_imports_elsewhere_and_shows_on_the_class_display(pipeline, tmp_path):
    from hldm.teaching.course import Course
    from hldm.teaching.course_store import CourseStore

    def course(where):
        return Course(pipeline, CourseStore(tmp_path / where / "course.sqlite"), tmp_path / where / "cases",
                      verifier=None, seconds=2.0)

    (tmp_path / "teacher").mkdir()
    (tmp_path / "student").mkdir()
    teacher, student = CourseHandlers(course("teacher")), CourseHandlers(course("student"))
    cases, listing = teacher.set_add_conditions([], ["aortic stenosis", "normal"], 5)
    assert "1. aortic stenosis" in listing and len(cases) == 2
    status, *_ = teacher.set_save("week 2", cases)
    assert "Saved set **week 2**: 2 case(s)" in status
    path, status = teacher.set_export("week 2", True)
    status, emptied, *_ = student.set_import(path)
    assert "Imported **week 2**" in status and emptied is None and "every clip matches" in status
    state, title, (sr, audio), _, spec, timeline = student.class_show("week 2", 1)
    assert "case 1 of 2" in title and "hldm-tl-iv hldm-tl-murmur" not in timeline  # murmur shown on *Reveal*
    spec, timeline, answer = student.class_reveal(state)
    assert "aortic stenosis" in answer and "hldm-tl-iv hldm-tl-murmur" in timeline and _is_image(spec)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    status, *_ = student.set_import(str(bad))
    assert status.startswith("**Import refused** (bad.json): not a case-set file")


def test_a_model_case_regenerates_bit_for_bit_from_its_seed(pipeline):
    # What case-set import stands on: the same model, findings and seed give the same clip hash.
    from hldm.teaching.cases import practice_spec, regenerate

    spec = practice_spec(4)
    first, again = (regenerate(pipeline, spec, "model", 11, seconds=2.0, steps=2) for _ in range(2))
    other = regenerate(pipeline, spec, "model", 12, seconds=2.0, steps=2)
    assert first.sha256 == again.sha256 != other.sha256


def test_batch_export_zip_has_wavs_and_labels(pipeline):
    import csv
    import io
    import json
    import zipfile

    path, status = ExportHandlers(pipeline).export(3, 2.0, 7, *MR, 2, 2.0, "ddim", progress=_NoProgress())
    with zipfile.ZipFile(path) as zf:
        wavs = sorted(n for n in zf.namelist() if n.endswith(".wav"))
        rows = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
        clips = json.loads(zf.read("labels.json"))["clips"]
        rate = sf.info(io.BytesIO(zf.read(wavs[0]))).samplerate
    assert len(wavs) == len(rows) == len(clips) == 3 and rate == 4000
    assert [int(r["seed"]) for r in rows] == [7, 8, 9]
    assert {r["condition"] for r in rows} == {"mitral regurgitation"} and rows[0]["grade"] == "3"
