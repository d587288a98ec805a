"""Expert rating mode: blinded real-vs-synthetic reading sessions and their statistics.

store (SQLite: readers, sessions, clips, answers), session (blind clip sets, resume,
audio), stats (clinical validity, detection accuracy, agreement, kappa, CSV), cli
(`python -m hldm ratings`), ui (the app's "Rate" tab). Import the submodules.
"""
