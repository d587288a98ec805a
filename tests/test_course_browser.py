"""The Course tab in a real headless Chromium, across an app restart (Debian's /usr/bin/chromium via
Playwright; never `playwright install`).

One app (the untrained tiny model, every case through the evaluator gate once, `--case-tries 1`):
a learner takes the whole 20-case screening test and gets the report; practises a case and sees
the feedback; a teacher saves a two-case set and exports it; a bad file and a tampered one are
refused. Then the app is stopped, its render cache deleted and it is started again on the same
data folder: the learner's progress is still there, and the exported set imports in a new
browser session, every clip regenerated and matching the file's hashes.
"""
import contextlib
import json
import re
import shutil

import pytest
from test_app_browser import CHROMIUM, CHROMIUM_ARGS, _choose, _fill_and_click, _has_text, _radio

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not found", allow_module_level=True)

TIMEOUT_MS = 240_000  # a hang guard on a busy 2-core box (a case is rendered on first use)
LEARNER = "learner-1"
SCREENING_SEED = 3
ARGS = ("--case-tries", "1")
RESTART_TIMEOUT_S = 900.0


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """{"url", "restart", "tmp"}: the app, and a function that stops it, deletes its render cache and
    serves the same data folder again (a restart)."""
    from app_server import running_app

    tmp = tmp_path_factory.mktemp("course")
    with contextlib.ExitStack() as stack:
        state = {"url": stack.enter_context(running_app(tmp, args=ARGS)), "tmp": tmp}

        def restart():
            stack.close()
            shutil.rmtree(tmp / "data" / "course-cases")
            # A second start on a box still busy with the first one's teardown and other jobs: seen at 240+ s.
            state["url"] = stack.enter_context(running_app(tmp, args=ARGS, start_timeout=RESTART_TIMEOUT_S))

        state["restart"] = restart
        yield state


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, url):
    """A fresh browser session (its own cookies and Gradio session) on the Course tab, signed in."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_role("tab", name="Course", exact=True).click()
    _fill_and_click(page, "#course_name input, #course_name textarea", LEARNER, "#course_sign_in",
                    "#course_who", f"Signed in as {LEARNER}")
    return page


def _save(page, tmp_path, name):
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


def test_a_learner_takes_the_whole_screening_test_and_gets_the_report(app, browser, tmp_path):
    page = _open(browser, app["url"])
    page.get_by_role("tab", name="Screening test").click()
    _fill_and_click(page, "#screen_seed input", str(SCREENING_SEED), "#screen_start", "#screen_header",
                    f"screening {SCREENING_SEED}: case 1 of 20")
    for k in range(20):
        _has_text(page, "#screen_header", f"case {k + 1} of 20")
        page.locator("#screen_audio audio[src]").first.wait_for(state="attached")
        _radio(page, "sq_category", ("normal", "innocent", "pathological")[k % 3])
        if k % 2:
            _choose(page, "sq_diagnosis", "aortic stenosis")
        page.click("#screen_submit")
    _has_text(page, "#screen_report", f"Screening report: screening {SCREENING_SEED}, {LEARNER}")
    report = page.inner_text("#screen_report")
    assert "over 20 cases" in report and "category" in report and "diagnosis" in report
    page.wait_for_selector("#screen_plot img[src]")
    _save(page, tmp_path, "screening_report")


def test_a_practice_case_gets_feedback_and_the_timeline(app, browser, tmp_path):
    page = _open(browser, app["url"])
    page.click("#course_next")
    _has_text(page, "#course_header", "Practice")
    assert re.search(r"(Model clip, verified|Simulator clip)", page.inner_text("#course_note"))
    page.locator("#course_half audio[src]").first.wait_for(state="attached")
    _radio(page, "cq_category", "pathological")
    page.click("#course_check")
    _has_text(page, "#course_feedback", "Score")
    page.wait_for_selector("#course_spec img[src]")
    page.wait_for_selector("#course_timeline .hldm-tl-S1")
    _save(page, tmp_path, "course_case")


def test_a_teacher_exports_a_set_and_bad_files_are_refused(app, browser, tmp_path):
    page = _open(browser, app["url"])
    page.get_by_role("tab", name="Case sets").click()
    for cond in ("mitral regurgitation", "aortic stenosis"):
        _choose(page, "set_conditions", cond)
    page.keyboard.press("Escape")
    page.click("#set_add")
    _has_text(page, "#set_list", "aortic stenosis")
    assert page.locator("#set_list li").count() == 2
    page.fill("#set_name input, #set_name textarea", "week 1")  # typed well after the tab appeared
    page.click("#set_save")
    _has_text(page, "#set_status", "Saved set week 1: 2 case(s)")
    _choose(page, "set_export_name", "week 1")
    page.click("#set_export")
    _has_text(page, "#set_status", "Exported week 1")
    href = page.locator("#set_file a[href]").first.get_attribute("href")
    text = page.evaluate("async (u) => await (await fetch(u)).text()", href)
    exported = json.loads(text)
    assert exported["format"] == "hldm-case-set" and len(exported["cases"]) == 2
    app["exported"] = tmp_path / "week1.json"
    app["exported"].write_text(text)

    junk = tmp_path / "not_a_set.json"
    junk.write_text("this is not a case set\n")
    page.set_input_files("#set_import input[type=file]", str(junk))
    _has_text(page, "#set_import_status", "Import refused")
    assert "not JSON" in page.inner_text("#set_import_status")
    tampered = tmp_path / "tampered.json"
    exported["cases"][0]["seed"] += 1
    tampered.write_text(json.dumps(exported))
    page.set_input_files("#set_import input[type=file]", str(tampered))
    _has_text(page, "#set_import_status", "tampered")


def test_after_a_restart_progress_is_kept_and_the_set_imports_with_the_same_audio(app, browser, tmp_path):
    assert "exported" in app, "runs after the export test"
    app["restart"]()
    page = _open(browser, app["url"])
    page.get_by_role("tab", name="Progress").click()
    page.click("#progress_show")
    _has_text(page, "#progress_text", "21 case(s) answered")  # 20 screening + 1 practice, from before the restart
    assert f"screening {SCREENING_SEED}" in page.inner_text("#progress_text")
    page.wait_for_selector("#progress_plot img[src]")
    _save(page, tmp_path, "progress")

    other = _open(browser, app["url"])  # another session imports the file the teacher exported
    other.get_by_role("tab", name="Case sets").click()
    other.set_input_files("#set_import input[type=file]", str(app["exported"]))
    _has_text(other, "#set_import_status", "every clip matches the file's hash")
    assert "Imported week 1: 2 case(s) regenerated" in other.inner_text("#set_import_status")
    other.get_by_role("tab", name="Practice").click()
    _choose(other, "course_source", "week 1")
    other.click("#course_next")
    _has_text(other, "#course_header", "Set week 1: case 1 of 2")
