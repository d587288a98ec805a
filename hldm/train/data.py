"""The training and validation windows of a run (DataConfig -> TrainData).

Real: CirCor's patient-level train split (hldm.data.circor.load_or_make_split,
seeded; the test patients are never read) from `hldm.paths.circor_dir()`
(../shared/data, or HLDM_CIRCOR). Validation: the val split. Synthetic:
`SimulatedWindows` covers what CirCor lacks (grades IV-VI, the rare
conditions, exact factor labels). Source "mix" draws `sim_fraction` of the
training windows from the simulator; when the real data is absent, "circor" and
"mix" fall back to the simulator and print why. What was used (window counts,
actual mixing ratio, split hash) goes into the model card via `TrainData.card()`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset

from hldm.paths import circor_dir
from hldm.train.config import DataConfig

VAL_SEED_OFFSET = 100_003  # simulated validation windows never repeat a training seed


@dataclass
class TrainData:
    train: Dataset
    val: Dataset
    source: str  # what was really used: "circor", "sim" or "mix"
    counts: dict = field(default_factory=dict)  # train_real, train_sim, val_real, val_sim
    split_sha256: str | None = None
    notice: str | None = None

    @property
    def sim_fraction(self) -> float:
        n = sum(self.counts.get(k, 0) for k in ("train_real", "train_augmented", "train_sim"))
        return self.counts.get("train_sim", 0) / n if n else 0.0

    def card(self) -> dict:
        return {"source": self.source, "windows": dict(self.counts),
                "sim_fraction": round(self.sim_fraction, 4), "split_sha256": self.split_sha256,
                "notice": self.notice}


def _subset(ds: Dataset, n: int, seed: int) -> Dataset:
    """A seeded random subset of n items (all of ds when n is 0 or >= len)."""
    if n <= 0 or n >= len(ds):
        return ds
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
    return Subset(ds, idx.tolist())


class MemoryCache(Dataset):
    """Keeps each item of a deterministic dataset after its first load, minus the keys training never reads.

    A simulated window costs about 40 ms to synthesise (2 s) and the same window
    comes back every epoch; held in memory it costs ~260 KB per 4 s window (features only).
    """

    DROP = ("components",)

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._items: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = self._items.get(i)
        if item is None:
            item = {k: v for k, v in self.dataset[i].items() if k not in self.DROP}
            self._items[i] = item
        return item

    def findings_at(self, i: int):
        return self[i]["findings"]


def _simulated(n: int, seconds: float, seed: int) -> Dataset:
    from hldm.data.windows import SimulatedWindows

    return MemoryCache(SimulatedWindows(n, seconds=seconds, seed=seed))


def _real_available() -> bool:
    root = circor_dir()
    return root.is_dir() and any(root.glob("*.txt"))


def build_data(cfg: DataConfig, seed: int, log=print) -> TrainData:
    """Build the run's datasets. Deterministic in (cfg, seed): every DDP rank builds the same."""
    source, notice = cfg.source, None
    if source in ("circor", "mix") and not _real_available():
        notice = (f"real CirCor data not found at {circor_dir()} (set HLDM_CIRCOR to use a copy elsewhere); "
                  f"data source {source!r} falls back to the simulator only")
        log(f"notice: {notice}")
        source = "sim"
    if source == "sim":
        train = _simulated(cfg.sim_windows, cfg.seconds, seed)
        val = _simulated(cfg.val_sim_windows, cfg.seconds, seed + VAL_SEED_OFFSET)
        return TrainData(train, val, "sim", {"train_real": 0, "train_sim": len(train),
                                             "val_real": 0, "val_sim": len(val)}, notice=notice)

    from hldm.data.circor import load_circor, load_or_make_split, manifest_path
    from hldm.data.windows import CirCorWindows

    index = load_circor(circor_dir())
    split = load_or_make_split(index, seed=cfg.split_seed)
    split_sha = json.loads(manifest_path(index, cfg.split_seed).read_text())["split_sha256"]
    all_train = CirCorWindows(index.recordings_of(split["train"]), seconds=cfg.seconds)
    real_train = _subset(all_train, cfg.max_real_windows, seed)
    real_val = _subset(CirCorWindows(index.recordings_of(split["val"]), seconds=cfg.seconds),
                       cfg.max_val_windows, seed + VAL_SEED_OFFSET)
    parts = [real_train]
    if cfg.augmented_windows:
        from hldm.data.augment import AugmentedWindows

        parts.append(MemoryCache(AugmentedWindows(all_train, cfg.augmented_windows, cfg.seconds, seed)))
    counts = {"train_real": len(real_train), "train_augmented": cfg.augmented_windows, "train_sim": 0,
              "val_real": len(real_val), "val_sim": 0}
    if source == "circor":
        return TrainData(ConcatDataset(parts), real_val, "circor", counts, split_sha256=split_sha, notice=notice)
    # n_sim / (n_real + n_sim) = sim_fraction
    n_sim = min(cfg.sim_windows, round(len(real_train) * cfg.sim_fraction / (1 - cfg.sim_fraction)))
    val_parts = [real_val]
    if n_sim:
        parts.append(_simulated(n_sim, cfg.seconds, seed))
    if cfg.val_sim_windows:
        val_parts.append(_simulated(cfg.val_sim_windows, cfg.seconds, seed + VAL_SEED_OFFSET))
    train, val = ConcatDataset(parts), ConcatDataset(val_parts)
    return TrainData(train, val, "mix", {**counts, "train_sim": n_sim, "val_sim": len(val) - len(real_val)},
                     split_sha256=split_sha, notice=notice)
