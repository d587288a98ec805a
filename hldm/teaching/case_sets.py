"""A teacher's case set as one JSON file: the findings and seeds of each case, the model they were
rendered with, and a sha256 of each clip, so a student's app regenerates the same audio and proves it.

    {"format": "hldm-case-set", "version": 1, "name": ..., "model": "hldm-...", "seconds": 6.0,
     "steps": null, "cases": [{"findings": {...}, "seed": 7, "source": "model", "render_seed": 8,
     "sha256": "..."}, ...], "checksum": "...", "wavs": {"0": "<base64 WAV>", ...}}

`checksum` is the sha256 of the canonical JSON of everything but itself and the optional WAVs:
an edited or truncated file is refused as tampered (a checksum, not a signature: it catches
edits and damage; the per-clip hashes catch any edit that changes what would be heard). A file
for another model is refused as foreign: its seeds would make other clips.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hldm.clinical.validation import FindingsError
from hldm.teaching.cases import Case, CaseSpec, clip_hash

FORMAT = "hldm-case-set"
VERSION = 1
MAX_CASES = 100
MAX_FILE_BYTES = 40 * 2**20  # 100 six-second WAVs in base64 fit with room to spare
SOURCES = ("model", "simulator")


class CaseSetError(ValueError):
    """A case-set file refused; the message says why and what to do."""


@dataclass(frozen=True)
class SetCase:
    spec: CaseSpec
    source: str
    render_seed: int | None
    sha256: str


@dataclass(frozen=True)
class CaseSet:
    name: str
    model: str
    seconds: float
    steps: int | None
    cases: tuple[SetCase, ...]

    @classmethod
    def of(cls, name: str, model: str, seconds: float, steps: int | None, cases: Sequence[Case]) -> "CaseSet":
        if not cases:
            raise CaseSetError("a case set needs at least one case")
        return cls(str(name), model, float(seconds), steps,
                   tuple(SetCase(c.spec, c.source, c.render_seed, c.sha256) for c in cases))

    @classmethod
    def from_body(cls, doc: dict) -> "CaseSet":
        """A set from its JSON body (`body()`), every case's findings validated; CaseSetError otherwise."""
        try:
            cases = doc["cases"]
            if not isinstance(cases, list) or not 1 <= len(cases) <= MAX_CASES:
                raise CaseSetError(f"cases: {len(cases) if isinstance(cases, list) else cases!r}; "
                                   f"a set holds 1..{MAX_CASES} cases")
            out = []
            for k, c in enumerate(cases):
                if c["source"] not in SOURCES:
                    raise CaseSetError(f"case {k + 1}: source {c['source']!r}; allowed: {', '.join(SOURCES)}")
                try:
                    spec = CaseSpec.of(c["findings"], c["seed"])
                except (FindingsError, ValueError, TypeError) as exc:
                    raise CaseSetError(f"case {k + 1}: {exc}") from None
                out.append(SetCase(spec, c["source"], None if c["render_seed"] is None else int(c["render_seed"]),
                                   str(c["sha256"])))
            return cls(str(doc["name"]), str(doc["model"]), float(doc["seconds"]), doc["steps"], tuple(out))
        except (KeyError, TypeError) as exc:
            raise CaseSetError(f"not a complete case-set file (missing or wrong field {exc})") from None

    def body(self) -> dict:
        """The JSON body without checksum or WAVs (what the checksum covers; what the store keeps)."""
        return {"format": FORMAT, "version": VERSION, "name": self.name, "model": self.model, "seconds": self.seconds,
                "steps": self.steps,
                "cases": [{**c.spec.to_json(), "source": c.source, "render_seed": c.render_seed, "sha256": c.sha256}
                          for c in self.cases]}

    @property
    def specs(self) -> list[CaseSpec]:
        return [c.spec for c in self.cases]


def _checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def export_bytes(case_set: CaseSet, audios: Sequence[np.ndarray] | None = None, sr: int = 4000) -> bytes:
    """The file: body + checksum, and with `audios` (one per case) the WAVs, base64."""
    from hldm.audio.io import wav_bytes

    doc = {**case_set.body(), "checksum": _checksum(case_set.body())}
    if audios is not None:
        doc["wavs"] = {str(k): base64.b64encode(wav_bytes(a, sr)).decode() for k, a in enumerate(audios)}
    return json.dumps(doc, indent=1).encode()


def parse(data: bytes, model: str | None = None) -> CaseSet:
    """A case-set file -> CaseSet; CaseSetError (nothing else) for anything that is not a valid, untampered
    set made with `model` (None: any model)."""
    if len(data) > MAX_FILE_BYTES:
        raise CaseSetError(f"file is {len(data) / 2**20:.1f} MB; a case set is at most {MAX_FILE_BYTES // 2**20} MB")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CaseSetError("not a case-set file: it is not JSON (export one from the Case sets tab)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CaseSetError(f"not a case-set file: no \"format\": \"{FORMAT}\" (export one from the Case sets tab)")
    if doc.get("version") != VERSION:
        raise CaseSetError(f"case-set version {doc.get('version')!r}; this app reads version {VERSION}")
    wavs = doc.pop("wavs", None)
    given = doc.pop("checksum", None)
    if given != _checksum(doc):
        raise CaseSetError("tampered or damaged: the file's checksum does not match its contents; "
                           "ask the teacher for a fresh export")
    if model is not None and doc.get("model") != model:
        raise CaseSetError(f"made for another model ({doc.get('model')!r}); this app runs {model!r}, whose clips "
                           "for the same seeds would differ. Ask for a set exported from this model.")
    result = CaseSet.from_body(doc)
    if wavs is not None:
        _check_wavs(wavs, result)
    return result


def _check_wavs(wavs, case_set: CaseSet) -> None:
    """Bundled WAVs must be the clips the hashes name (the checksum does not cover them)."""
    import soundfile as sf

    if not isinstance(wavs, dict):
        raise CaseSetError("wavs: not a mapping of case number to WAV")
    for key, b64 in wavs.items():
        try:
            k = int(key)
            audio, _ = sf.read(io.BytesIO(base64.b64decode(b64)), dtype="int16")
        except Exception:  # noqa: BLE001 - whatever is wrong with it, the bundled WAV is unusable
            raise CaseSetError(f"wavs: entry {key!r} is not a WAV") from None
        if not 0 <= k < len(case_set.cases) or clip_hash(audio) != case_set.cases[k].sha256:
            raise CaseSetError(f"tampered: bundled WAV {key} is not the clip case {k + 1}'s hash names")


def mismatches(case_set: CaseSet, cases: Sequence[Case]) -> list[int]:
    """Indices (0-based) of regenerated cases whose audio does not hash to what the set recorded."""
    return [k for k, (want, got) in enumerate(zip(case_set.cases, cases)) if got.sha256 != want.sha256]
