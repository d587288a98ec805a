"""Resumable training state on disk: safetensors for tensors, JSON for everything else.

Layout of a stage directory `<out>/<stage>/`:

    checkpoint.json                 the commit point: step, config, optimizer groups,
                                    RNG states, sha256 of the tensor file
    checkpoint-<step>.safetensors   model/*, ema/*, optim/<param>/<key>, rng/<rank>/*

Each file is written to a temp file in the same directory, fsync'ed and moved in
place with `os.replace`; the JSON goes last, so a kill -9 at any moment leaves
either the previous checkpoint or the new one, never a mix. Older tensor files are
deleted only after the new JSON is in place. Nothing is unpickled: a corrupt or
foreign file raises `CheckpointError` saying which file and why.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

FORMAT = "hldm-train-state/1"
INDEX = "checkpoint.json"


class CheckpointError(RuntimeError):
    """A training checkpoint that is missing, truncated, corrupt or not ours."""


class ConfigMismatchError(ValueError):
    """The config asked for differs from the one a checkpoint was written with; `.keys` lists the dotted keys."""

    def __init__(self, keys: list[str], message: str):
        super().__init__(message)
        self.keys = keys


@dataclass
class TrainState:
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict  # torch optimizer state_dict
    rng: list[dict]  # one per rank, as from capture_rng()
    meta: dict  # config, epoch, wall time, world size, ...


# ---------------------------------------------------------------- atomic files

def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


# ---------------------------------------------------------------- RNG

def capture_rng() -> dict:
    """Every RNG a training step draws from: torch CPU (+ CUDA), numpy global, Python `random`."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.uint32).view(np.int32).copy()),
        "numpy_rest": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _jsonable_python_state(random.getstate()),
    }
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda{i}"] = s
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().view(np.uint32)
    pos, has_gauss, cached = state["numpy_rest"]
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = sorted(k for k in state if k.startswith("cuda"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state[k] for k in cuda][: torch.cuda.device_count()])


def _jsonable_python_state(s):
    version, internal, gauss = s
    return [version, list(internal), gauss]


# ---------------------------------------------------------------- flatten / unflatten

def _split_rng(rng: list[dict]) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors, rest = {}, []
    for rank, state in enumerate(rng):
        other = {}
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                tensors[f"rng/{rank}/{k}"] = v
            else:
                other[k] = v
        rest.append(other)
    return tensors, rest


def _split_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, state_json = {}, {}
    for pid, pstate in sd["state"].items():
        for k, v in pstate.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{pid}/{k}"] = v
            else:
                state_json.setdefault(str(pid), {})[k] = v
    groups = []
    for gi, g in enumerate(sd["param_groups"]):
        gj = {}
        for k, v in g.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim_group/{gi}/{k}"] = v
            else:
                gj[k] = v
        groups.append(gj)
    return tensors, {"state": state_json, "param_groups": groups}


def _join_optimizer(tensors: dict[str, torch.Tensor], js: dict) -> dict:
    state: dict[int, dict] = {}
    for pid, d in js["state"].items():
        state.setdefault(int(pid), {}).update(d)
    groups = [dict(g) for g in js["param_groups"]]
    for name, v in tensors.items():
        kind, idx, key = name.split("/", 2)
        if kind == "optim":
            state.setdefault(int(idx), {})[key] = v
        elif kind == "optim_group":
            groups[int(idx)][key] = v
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------- save / load

def save_state(stage_dir: Path, state: TrainState) -> Path:
    """Write `state` atomically into `stage_dir`; returns the tensor file's path."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v for k, v in state.model.items()}
    tensors.update({f"ema/{k}": v for k, v in state.ema.items()})
    opt_tensors, opt_json = _split_optimizer(state.optimizer)
    tensors.update(opt_tensors)
    rng_tensors, rng_json = _split_rng(state.rng)
    tensors.update(rng_tensors)
    # safetensors refuses shared storage (tied weights, views): give it plain contiguous CPU copies
    blob = st_save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()})
    tensor_file = stage_dir / f"checkpoint-{state.step:08d}.safetensors"
    atomic_write_bytes(tensor_file, blob)
    atomic_write_json(stage_dir / INDEX, {
        "format": FORMAT,
        "step": state.step,
        "tensors": tensor_file.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "optimizer": opt_json,
        "rng": rng_json,
        "meta": state.meta,
    })
    for old in stage_dir.glob("checkpoint-*.safetensors"):
        if old.name != tensor_file.name:
            old.unlink(missing_ok=True)
    for tmp in stage_dir.glob(".checkpoint*.tmp"):  # left by a writer killed mid-write; rank 0 is the only writer
        tmp.unlink(missing_ok=True)
    return tensor_file


def has_checkpoint(stage_dir: Path) -> bool:
    return (Path(stage_dir) / INDEX).is_file()


def read_index(stage_dir: Path) -> dict:
    """The checkpoint's JSON (step, meta with the config), validated; raises CheckpointError."""
    path = Path(stage_dir) / INDEX
    if not path.is_file():
        raise CheckpointError(f"no checkpoint in {stage_dir} (missing {INDEX})")
    try:
        index = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt (not valid JSON: {e}); delete {stage_dir} "
                              f"to start the stage over") from e
    missing = [k for k in ("format", "step", "tensors", "sha256", "optimizer", "rng", "meta")
               if not isinstance(index, dict) or k not in index]
    if missing:
        raise CheckpointError(f"{path} is not an H-LDM training checkpoint (missing {', '.join(missing)})")
    if index["format"] != FORMAT:
        raise CheckpointError(f"{path}: format {index['format']!r} not supported (expected {FORMAT!r})")
    return index


def load_state(stage_dir: Path, device: str | torch.device = "cpu") -> TrainState:
    """Read the checkpoint in `stage_dir`, checking the tensor file against its recorded sha256."""
    stage_dir = Path(stage_dir)
    index = read_index(stage_dir)
    tensor_file = stage_dir / Path(index["tensors"]).name
    if not tensor_file.is_file():
        raise CheckpointError(f"{tensor_file} named by {stage_dir / INDEX} is missing")
    blob = tensor_file.read_bytes()
    if hashlib.sha256(blob).hexdigest() != index["sha256"]:
        raise CheckpointError(f"{tensor_file} is corrupt (sha256 does not match {INDEX}; "
                              f"{len(blob)} bytes); delete {stage_dir} to start the stage over")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{tensor_file} is not a readable safetensors file: {e}") from e
    model, ema, opt, rng_t = {}, {}, {}, {}
    for name, v in tensors.items():
        kind, _, rest = name.partition("/")
        if kind == "model":
            model[rest] = v.to(device)
        elif kind == "ema":
            ema[rest] = v.to(device)
        elif kind == "rng":
            rng_t[rest] = v
        elif kind in ("optim", "optim_group"):
            opt[name] = v
        else:
            raise CheckpointError(f"{tensor_file}: unexpected tensor {name!r}; not an H-LDM training checkpoint")
    rng = [dict(d) for d in index["rng"]]
    for name, v in rng_t.items():
        rank, key = name.split("/", 1)
        rng[int(rank)][key] = v
    return TrainState(step=int(index["step"]), model=model, ema=ema,
                      optimizer=_join_optimizer(opt, index["optimizer"]), rng=rng, meta=index["meta"])


# ---------------------------------------------------------------- config comparison

def diff_configs(saved, current, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (lists compared whole)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for k in sorted(set(saved) | set(current), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in saved or k not in current:
                out.append(key)
            else:
                out.extend(diff_configs(saved[k], current[k], key))
        return out
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731  JSON turns tuples into lists
    return [] if norm(saved) == norm(current) else [prefix or "<root>"]


def check_config(saved: dict, current: dict, what: str) -> None:
    """Raise ConfigMismatchError naming every differing key and both values."""
    keys = diff_configs(saved, current)
    if not keys:
        return

    def get(d, key):
        for part in key.split("."):
            if not isinstance(d, dict) or part not in d:
                return "<absent>"
            d = d[part]
        return d

    lines = [f"  {k}: checkpoint {get(saved, k)!r}, now {get(current, k)!r}" for k in keys[:20]]
    more = f"\n  ... and {len(keys) - 20} more" if len(keys) > 20 else ""
    raise ConfigMismatchError(keys, f"the config does not match {what} ({len(keys)} key(s) differ):\n"
                                    + "\n".join(lines) + more +
                              "\nuse the config the run was started with, or a new --out directory")
