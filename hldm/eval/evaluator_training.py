"""Train the in-domain PCG evaluator (hldm.models.evaluator) and score it per attribute.

A short supervised loop, separate from the 3-stage generator trainer: the
evaluator must never see generated audio, only real training-split windows and
simulator clips, so the metrics it drives stay independent of the generator.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm.auto import tqdm

from hldm.clinical.vocabulary import Findings
from hldm.models.evaluator import HEAD_CLASSES, IGNORE, EvaluatorConfig, PCGEvaluator, finding_targets


def batch_targets(findings: Sequence[Findings]) -> dict[str, torch.Tensor]:
    rows = [finding_targets(f) for f in findings]
    return {head: torch.tensor([r[head] for r in rows]) for head in HEAD_CLASSES}


def train_evaluator(train: Dataset | Sequence[Dataset], steps: int = 2000, batch_size: int = 32,
                    lr: float = 2e-3, seed: int = 0, cfg: EvaluatorConfig | None = None,
                    progress: bool = True) -> PCGEvaluator:
    """Fit a fresh evaluator on window datasets (items per hldm.data.windows); returns it in eval mode."""
    from hldm.data.windows import collate

    torch.manual_seed(seed)
    data = ConcatDataset(list(train)) if isinstance(train, (list, tuple)) else train
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=collate, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    model = PCGEvaluator(cfg or EvaluatorConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    step, bar = 0, tqdm(total=steps, desc="evaluator", disable=not progress)
    while step < steps:
        for batch in loader:
            loss, _ = model.loss(batch["features"], batch_targets(batch["findings"]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step >= steps:
                break
    bar.close()
    return model.eval()


@torch.inference_mode()
def predict(model: PCGEvaluator, features: torch.Tensor, batch_size: int = 64
            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Features (N, 129, T) -> embeddings (N, D) and per-head class probabilities {head: (N, K)}."""
    embs, probs = [], {h: [] for h in model.heads}
    for chunk in torch.split(features, batch_size):
        emb, logits = model(chunk)
        embs.append(emb.numpy())
        for h, out in logits.items():
            probs[h].append(out.softmax(-1).numpy())
    return np.concatenate(embs), {h: np.concatenate(p) for h, p in probs.items()}


def attribute_accuracy(model: PCGEvaluator, data: Dataset) -> dict[str, float]:
    """Held-out accuracy per head over the labelled clips of a window dataset."""
    from hldm.data.windows import collate

    correct = {h: 0 for h in HEAD_CLASSES}
    total = {h: 0 for h in HEAD_CLASSES}
    for batch in DataLoader(data, batch_size=64, collate_fn=collate):
        _, probs = predict(model, batch["features"])
        targets = batch_targets(batch["findings"])
        for h in HEAD_CLASSES:
            keep = targets[h] != IGNORE
            correct[h] += int((probs[h].argmax(-1)[keep.numpy()] == targets[h][keep].numpy()).sum())
            total[h] += int(keep.sum())
    return {h: correct[h] / total[h] for h in HEAD_CLASSES if total[h]}
