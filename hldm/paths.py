"""Where things live: the repo, the shipped checkpoint, the read-only real data, the feature cache."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO / "checkpoints" / "default"


def circor_dir() -> Path:
    """CirCor in its original layout; HLDM_CIRCOR overrides (e.g. a clinic's own full download)."""
    env = os.environ.get("HLDM_CIRCOR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "circor" / "training_data"


def cache_dir() -> Path:
    """Derived features and split manifests: outside the repo, never committed."""
    env = os.environ.get("HLDM_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "hldm"
    path.mkdir(parents=True, exist_ok=True)
    return path
