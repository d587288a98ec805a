"""The clinician app (Gradio), one module per tab; `app.py` at the repository root serves it.

    studio.py           build_app (the page: header, shared design panel, the tabs), launch, load_pipeline
    design.py           the patient being designed: findings controls, L1/L2/L3 prompts, sampling settings
    generate.py         Generate tab + /generate        what_if.py   What-if tab + /what_if
    interpretability.py w_i, M_cardiac, fusion weights  upload.py    Your recording tab + /edit
    course.py           Course tab + /course_*          export.py    Batch export tab + /export
    api.py              named, typed API parameters (`findings_api`) and file outputs
    common.py           limits, controls <-> findings, audio outputs, settings checks

Each tab module holds its layout, its handlers (a class of plain methods, called directly by
tests) and its API endpoint; the Rate tab lives in hldm.ratings.ui. Every model call goes
through hldm.pipeline.HLDMPipeline; figures come from hldm.app_views.
"""
