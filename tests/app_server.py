"""Run app.py as a subprocess on a free loopback port over a tiny random pipeline (browser and load tests).

With no checkpoint the app builds the untrained tiny model itself (its no-checkpoint mode), which spares
the test process importing torch and the text encoder: about half a minute on a busy 2-core machine.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 240.0  # a hang guard, not a timing check: a busy 2-core CI box is slow to import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(tmp: Path, checkpoint: Path | None = None, args: tuple[str, ...] = (),
                start_timeout: float = START_TIMEOUT_S):
    """Yield the base URL of app.py serving `checkpoint` (None: the untrained tiny model) with extra
    command-line `args`; temp files, caches, the ratings database and logs stay under tmp."""
    env = dict(os.environ)
    for var, sub in (("TMPDIR", "tmp"), ("GRADIO_TEMP_DIR", "gradio"), ("MPLCONFIGDIR", "mpl"),
                     ("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("HLDM_CACHE", "cache")):
        env[var] = str(tmp / sub)
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    (tmp / "data").mkdir(exist_ok=True)
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp / "app.log").open("w")
    checkpoint = tmp / "no-checkpoint" if checkpoint is None else checkpoint
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port), "--checkpoint",
                             str(checkpoint), "--data-dir", str(tmp / "data"), *args], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}:\n{(tmp / 'app.log').read_text()}")
            try:
                with urllib.request.urlopen(url + "/config", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer within {start_timeout:.0f} s:\n"
                                   f"{(tmp / 'app.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
