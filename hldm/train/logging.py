"""Metrics of a stage: `metrics.csv` (long format) + TensorBoard event files in `tb/`.

CSV rows are `step,epoch,split,metric,value` (split "train" or "val"), one per
metric, so stages with different loss parts share one format; pivot with pandas
(`df.pivot_table(index="step", columns=["split", "metric"])`). On resume the rows
written after the checkpoint's step are dropped and TensorBoard is opened with
`purge_step`, so the curve continues as if the run had never stopped.
Only rank 0 writes.
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from hldm.train.state import atomic_write_bytes

FIELDS = ("step", "epoch", "split", "metric", "value")


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.csv, values as float, step/epoch as int.

    A row cut short (a kill -9 while it was being written, always past the last
    checkpoint) is skipped, so a resume can still read the file.
    """
    with open(path, newline="") as f:
        rows = [_parse_row(r) for r in csv.DictReader(f)]
    return [r for r in rows if r is not None]


def _parse_row(r: dict) -> dict | None:
    try:
        return {"step": int(r["step"]), "epoch": int(r["epoch"]), "split": r["split"],
                "metric": r["metric"], "value": float(r["value"])} if None not in r.values() else None
    except ValueError:  # a number cut short
        return None


class MetricsLogger:
    def __init__(self, stage_dir: Path, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(stage_dir) / "metrics.csv"
        if not enabled:
            return
        Path(stage_dir).mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        new = not self.path.exists()
        self._file = open(self.path, "a", newline="")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(FIELDS)
        # TensorBoard hides earlier events with step >= purge_step: those a killed run logged past the
        # checkpoint (all of them when it had none); steps start at 1.
        tb_dir = Path(stage_dir) / "tb"
        _wait_past_event_files(tb_dir)
        self._tb = SummaryWriter(str(tb_dir), purge_step=resume_step + 1)

    def _truncate_after(self, step: int) -> None:
        """Drop rows past `step` (written after the last checkpoint by a run that was killed)."""
        if not self.path.exists():
            return
        if step == 0:
            self.path.unlink()
            return
        keep = [r for r in read_metrics(self.path) if r["step"] <= step]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(FIELDS)
        w.writerows([[r[k] for k in FIELDS] for r in keep])
        atomic_write_bytes(self.path, buf.getvalue().encode())

    def log(self, step: int, epoch: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in metrics.items():
            self._csv.writerow([step, epoch, split, name, repr(float(value))])
            self._tb.add_scalar(f"{split}/{name}", float(value), step)
        self._file.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tb.close()


def _wait_past_event_files(tb_dir: Path) -> None:
    """Sleep until the clock's second is past the newest event file's.

    TensorBoard reads a directory's event files in name order, and a name is
    events.out.tfevents.<unix second>.<host>.<pid>...: a resume started within the
    killed run's second would sort by pid and could be read first, and then its purge
    marker would drop the wrong steps.
    """
    stamps = [int(p.name.split(".")[3]) for p in tb_dir.glob("events.out.tfevents.*")
              if p.name.split(".")[3].isdigit()]
    if stamps:
        delay = max(stamps) + 1 - time.time()
        if delay > 0:
            time.sleep(delay)

