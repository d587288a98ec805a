"""Train the in-domain PCG evaluator (hldm.models.evaluator) and score it per attribute.

A short supervised loop, separate from the 3-stage generator trainer: the
evaluator must never see generated audio when it serves as the metrics'
listener, only real training-split windows and simulator clips, so the metrics
it drives stay independent of the generator.

Clips are held in memory as loudness-normalised waveforms (N, S) (64 KB per 4 s
clip, a quarter of its features) and turned into features a batch at a time,
so the loop never touches the disk or the simulator after it starts.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hldm.audio.features import normalize_loudness, to_features
from hldm.clinical.vocabulary import Findings
from hldm.models.evaluator import HEAD_CLASSES, IGNORE, EvaluatorConfig, PCGEvaluator, finding_targets


def clip_features(audio: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """Waveforms (B, S) -> evaluator input (B, 129, T): features of the loudness-normalised audio,
    the path every clip takes (real, simulated or generated)."""
    return to_features(normalize_loudness(np.asarray(audio, dtype=np.float32)))


def batch_targets(findings: Sequence[Findings]) -> dict[str, torch.Tensor]:
    """Per head, the class index of each finding set (IGNORE where unknown): {head: (B,)}."""
    rows = [finding_targets(f) for f in findings]
    return {head: torch.tensor([r[head] for r in rows], dtype=torch.long) for head in HEAD_CLASSES}


def train_evaluator(audio: np.ndarray | Sequence[np.ndarray], findings: Sequence[Findings], steps: int = 2000,
                    batch_size: int = 32, lr: float = 2e-3, seed: int = 0, cfg: EvaluatorConfig | None = None,
                    progress: bool = True) -> PCGEvaluator:
    """Fit a fresh evaluator on clips of equal length (N, S) labelled by `findings`; returns it in eval mode."""
    audio = normalize_loudness(np.asarray(audio, dtype=np.float32))  # (N, S)
    if len(audio) != len(findings) or len(audio) == 0:
        raise ValueError(f"need one finding set per clip and at least one clip; got {len(audio)} clips, "
                         f"{len(findings)} finding sets")
    targets = batch_targets(findings)
    batch_size = min(batch_size, len(audio))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = PCGEvaluator(cfg or EvaluatorConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    order: list[int] = []
    bar = tqdm(range(steps), desc="evaluator", disable=not progress)
    for _ in bar:
        if len(order) < batch_size:  # reshuffle each epoch; drop the ragged tail
            order = rng.permutation(len(audio)).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        loss, _ = model.loss(to_features(audio[idx]), {h: t[idx] for h, t in targets.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
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


def attribute_accuracy(model: PCGEvaluator, audio: Sequence[np.ndarray], findings: Sequence[Findings],
                       batch_size: int = 64) -> dict[str, float]:
    """Accuracy per head over the clips labelled for it (heads with no labelled clip are left out)."""
    correct = {h: 0 for h in HEAD_CLASSES}
    total = {h: 0 for h in HEAD_CLASSES}
    for lo in range(0, len(audio), batch_size):
        _, probs = predict(model.eval(), clip_features(audio[lo:lo + batch_size]))
        targets = batch_targets(findings[lo:lo + batch_size])
        for h in HEAD_CLASSES:
            keep = (targets[h] != IGNORE).numpy()
            correct[h] += int((probs[h].argmax(-1)[keep] == targets[h].numpy()[keep]).sum())
            total[h] += int(keep.sum())
    return {h: correct[h] / total[h] for h in HEAD_CLASSES if total[h]}
