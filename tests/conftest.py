"""Shared test setup: offline, temp dirs inside the test's tmp, real data optional."""
import os
import tempfile
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="hldm-tests-"))
for var, sub in (("MPLCONFIGDIR", "mpl"), ("GRADIO_TEMP_DIR", "gradio"),
                 ("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("HLDM_CACHE", "cache")):
    os.environ.setdefault(var, str(_TMP / sub))
    Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("MPLBACKEND", "Agg")

from hldm.paths import circor_dir  # noqa: E402


@pytest.fixture(scope="session")
def real_circor() -> Path:
    """The real CirCor copy; tests that need it skip cleanly when it is absent."""
    root = circor_dir()
    if not root.is_dir() or not any(root.glob("*.txt")):
        pytest.skip(f"real CirCor data not found at {root}")
    return root


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """app.py on the untrained tiny model on a free loopback port, with a CirCor-layout folder of real
    recordings for the Rate tab. One server for the browser and the load tests: starting it takes a while."""
    from app_server import running_app
    from fixtures_circor import make_circor

    tmp = tmp_path_factory.mktemp("app")
    with running_app(tmp, args=("--real-dir", str(make_circor(tmp / "circor")))) as url:
        yield url
