"""Rendered cases on disk, and the bank that serves a class from them.

A case costs a generation or several (the gate may redraw), ~1-3 s of CPU each; thirty students
opening the same set must not each pay for it. `RenderCache` keeps every rendered case as
`<key>.npz` (audio) + `<key>.json` (the rest) under one folder, keyed by (model id, findings,
seed, seconds, steps), and evicts the least recently used when the folder outgrows its bound.
`CaseBank` serves cases: from the cache, else rendered once while every other request for the
same case waits on that one render; renders run one at a time (they compete for the same
cores); `prefetch` renders a whole set ahead on a background thread when the set is opened.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from hldm.teaching.cases import Case, CaseSpec

DEFAULT_MAX_BYTES = 256 * 2**20  # ~2,500 six-second cases


class RenderCache:
    """Cases on disk under `directory`, at most about `max_bytes` (oldest-used evicted first)."""

    def __init__(self, directory: str | Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()

    @staticmethod
    def key(model: str, spec: CaseSpec, seconds: float, steps: int | None) -> str:
        """The identity of a rendering: the same key, the same audio."""
        blob = json.dumps([model, spec.findings, spec.seed, round(float(seconds), 3), steps], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def get(self, key: str) -> Case | None:
        meta_path, audio_path = self.dir / f"{key}.json", self.dir / f"{key}.npz"
        try:
            meta = json.loads(meta_path.read_text())
            with np.load(audio_path) as z:
                audio = z["audio"]
            os.utime(audio_path)  # recently used: evicted last
        except (OSError, ValueError, KeyError):
            return None  # absent, evicted meanwhile, or half-written by a killed process: render again
        return Case.from_meta(meta, audio)

    def put(self, key: str, case: Case) -> None:
        """Write atomically (temp file + rename; the audio last, as `get` reads it second), then evict."""
        for suffix, write in ((".json", lambda fh: fh.write(json.dumps(case.meta()).encode())),
                              (".npz", lambda fh: np.savez(fh, audio=case.audio))):
            tmp = self.dir / f".{key}{suffix}.{threading.get_ident()}.tmp"
            with open(tmp, "wb") as fh:
                write(fh)
            os.replace(tmp, self.dir / f"{key}{suffix}")
        self.evict()

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("*.*") if p.is_file())

    def evict(self) -> None:
        """Drop least recently used cases until the folder is within max_bytes."""
        with self._lock:
            entries = []
            for audio in self.dir.glob("*.npz"):
                meta = audio.with_suffix(".json")
                try:
                    size = audio.stat().st_size + (meta.stat().st_size if meta.exists() else 0)
                    entries.append((audio.stat().st_mtime, size, audio, meta))
                except FileNotFoundError:
                    continue
            total = sum(e[1] for e in entries)
            for _, size, audio, meta in sorted(entries, key=lambda e: e[0]):
                if total <= self.max_bytes:
                    break
                audio.unlink(missing_ok=True)
                meta.unlink(missing_ok=True)
                total -= size


class CaseBank:
    """Cases for the app: cached, rendered once however many ask, pre-rendered in the background.

    render(spec) -> Case is the gate (hldm.teaching.cases.render_case over the app's pipeline);
    key(spec) -> str the cache key of its rendering."""

    def __init__(self, render: Callable[[CaseSpec], Case], key: Callable[[CaseSpec], str], cache: RenderCache):
        self.render, self.key, self.cache = render, key, cache
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._pending: dict[str, Future] = {}
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None

    def _claim(self, spec: CaseSpec) -> tuple[str, Future, bool]:
        """(key, the future that will hold the case, whether the caller must render it)."""
        key = self.key(spec)
        with self._lock:
            if key in self._pending:
                return key, self._pending[key], False
            fut: Future = Future()
            cached = self.cache.get(key)
            if cached is not None:
                fut.set_result(cached)
                return key, fut, False
            self._pending[key] = fut
            return key, fut, True

    def _fill(self, key: str, spec: CaseSpec, fut: Future) -> None:
        try:
            with self._render_lock:
                case = self.render(spec)
            self.cache.put(key, case)
            fut.set_result(case)
        except BaseException as exc:  # noqa: BLE001 - every waiter gets the render's error
            fut.set_exception(exc)
        finally:
            with self._lock:
                self._pending.pop(key, None)

    def case(self, spec: CaseSpec) -> Case:
        """The case, from the cache or rendered now (or waited for, when another request renders it)."""
        key, fut, mine = self._claim(spec)
        if mine:
            self._fill(key, spec, fut)
        return fut.result()

    def cached(self, spec: CaseSpec) -> bool:
        return self.cache.get(self.key(spec)) is not None

    def prefetch(self, specs: Sequence[CaseSpec]) -> int:
        """Queue every case not cached or rendering for the background renderer; returns how many."""
        queued = 0
        for spec in specs:
            key, fut, mine = self._claim(spec)
            if mine:
                self._queue.put((key, spec, fut))
                queued += 1
        with self._lock:  # one renderer thread for the bank's life, started by the first prefetch
            if queued and self._worker is None:
                self._worker = threading.Thread(target=self._drain, name="case-prefetch", daemon=True)
                self._worker.start()
        return queued

    def _drain(self) -> None:
        while True:
            self._fill(*self._queue.get())

    def wait(self, timeout: float | None = None) -> None:
        """Block until nothing is queued or rendering (tests, the acceptance script)."""
        with self._lock:
            futs = list(self._pending.values())
        for f in futs:
            f.exception(timeout=timeout)
