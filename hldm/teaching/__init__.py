"""The auscultation course: verified cases from the model, four-question scoring, learners' progress,
screening tests, contrast drills and teacher case sets.

    scoring.py      the four questions and drills, scored (pure functions)
    cases.py        case plans (practice, screening, drills) and the verification gate with its fallback
    cache.py        rendered cases on disk by (model id, findings, seed); background pre-render
    case_sets.py    a teacher's set as one JSON file: export, import, tamper and foreign-model refusal
    course_store.py learners, attempts, answers and sets in SQLite (hldm.sqlite_store's rules)
"""
