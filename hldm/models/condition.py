"""Condition encoders: clinical findings + L1/L2/L3 prompts -> condition vector c (H-LDM Sec. 3.2).

`ClinicalConditioner` is the paper's encoder:
    f_text  = Linear([MiniLM(L1) | MiniLM(L2) | MiniLM(L3)])      (B, D)
    g_graph = GraphSAGE_2(patient subgraph)[patient node]         (B, D)
    c       = l1 * LN(f_text) + l2 * LN(g_graph)                  (B, D)
with learnable scalars l1, l2 (LN: parameter-free layer norm, so l1 and l2 are
the two sources' relative contributions the app can display). With
`attributes_init` set, a third source l3 * LN(f_attr) adds embeddings of the
categorical attributes: in MiniLM's pooled sentence embedding "Grade II/VI"
and "Grade V/VI" differ by < 1 %, and a denoiser trained on CPU budgets never
learned to read the grade from text and graph alone (measured: swapping the
grade changed its denoising loss by 0.1 %).

`LabelConditioner` embeds the categorical attributes only (no text, no graph): the
label-conditional baseline and the "-Hierarchical" ablation.

Two optional attribute inputs (Model v2, off in older checkpoints' configs):
`rate_features` gives the attribute source the heart rate itself (MiniLM reads "60 bpm"
and "140 bpm" as nearly the same sentence, and the previous model played ~100 bpm
whatever was asked), and `source_tag` embeds where a training window came from
(SOURCES: real, augmented real, simulated), so sampling can ask for "real".

Both: `forward(findings, prompts=None, drop_mask=None, sources=None) -> (c (B, D), hr (B,))`;
`sources` (one SOURCES value per row) defaults to "real".
hr is the heart rate in bpm (Medical Attention's cardiac period) and is never
dropped: rhythm is always given. `drop_mask` (B,) bool replaces the selected
rows of c by the learned unconditional embedding `null(B)` (condition dropout in
training, the unconditional branch of classifier-free guidance at sampling).

The MiniLM base weights are not part of a conditioner's state_dict (see
hldm.models.text_encoder); checkpoints hold only the fine-tuned top layer(s).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from hldm.clinical.knowledge_graph import NODE_FEATURE_DIM, default_graph
from hldm.clinical.prompts import Prompts, build_prompts
from hldm.clinical.vocabulary import (
    CONDITIONS,
    LOCATIONS,
    MAX_GRADE_SYSTOLIC,
    MURMUR_STATUS,
    PITCHES,
    QUALITIES,
    SHAPES,
    SOURCES,
    TIMINGS,
    Findings,
)
from hldm.models.graph_encoder import PatientGraphEncoder
from hldm.models.text_encoder import EMBED_DIM, LRU, MiniLMTextEncoder

KINDS = ("clinical", "label")
LEVELS = ("L1", "L2", "L3")

# Attribute -> allowed values for the label conditioner; index 0 of each embedding = "not given".
LABEL_FIELDS: dict[str, tuple] = {
    "murmur": MURMUR_STATUS,
    "timing": TIMINGS,
    "shape": SHAPES,
    "grade": tuple(range(1, MAX_GRADE_SYSTOLIC + 1)),
    "pitch": PITCHES,
    "quality": QUALITIES,
    "location": LOCATIONS,
    "condition": CONDITIONS,
}


@dataclass
class ConditionConfig:
    """Saved with the weights. `dim` is D, the width of c."""

    kind: str = "clinical"  # "clinical" (text + graph) or "label" (one-hot attributes)
    dim: int = 256
    text_trainable_layers: int = 1  # top MiniLM layers fine-tuned; 0 = frozen text encoder
    text_max_tokens: int = 128
    cache_size: int = 2048  # LRU entries for prompt states/embeddings and patient subgraphs
    graph_hidden: int = 128
    fusion_init: tuple[float, float] = (1.0, 0.5)  # initial l1 (text), l2 (graph)
    label_embed_dim: int = 32
    attributes_init: float | None = 1.0  # initial l3 of the attribute source; None: text + graph only (paper)
    rate_features: bool = False  # the heart rate as Fourier features of log2(bpm / 80) in the attributes
    source_tag: bool = False  # an embedding of the window's source (real / augmented / simulated)

    def __post_init__(self):
        self.fusion_init = tuple(float(v) for v in self.fusion_init)
        if self.kind not in KINDS:
            raise ValueError(f"kind: unknown value {self.kind!r}; allowed: {', '.join(KINDS)}")
        for name in ("dim", "text_max_tokens", "graph_hidden", "label_embed_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: {getattr(self, name)!r} not allowed; must be >= 1")
        if self.cache_size < 0:
            raise ValueError(f"cache_size: {self.cache_size!r} not allowed; must be >= 0")
        if len(self.fusion_init) != 2:
            raise ValueError(f"fusion_init: {self.fusion_init!r}; must be two numbers (text, graph)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fusion_init"] = list(self.fusion_init)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ConditionConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown condition config field(s) {unknown}; allowed: {sorted(known)}")
        return cls(**d)


def heart_rates(findings: list[Findings]) -> torch.Tensor:
    """(B,) float32 heart rate in bpm, read from the findings."""
    return torch.tensor([float(f.heart_rate) for f in findings], dtype=torch.float32)


RATE_OCTAVES = 4  # Fourier features of log2(bpm / 80) at 1, 2, 4, 8 cycles per octave


def rate_features(hr: torch.Tensor) -> torch.Tensor:
    """Heart rate (B,) bpm -> (B, 2 * RATE_OCTAVES) sin/cos features of log2(bpm / 80); unknown (nan) = 80."""
    x = torch.log2(torch.nan_to_num(hr, nan=80.0).clamp(20.0, 250.0) / 80.0)[:, None] * math.pi
    freqs = 2.0 ** torch.arange(RATE_OCTAVES, dtype=hr.dtype, device=hr.device)
    return torch.cat([torch.sin(x * freqs), torch.cos(x * freqs)], dim=-1)


def source_indices(sources, batch: int) -> torch.Tensor:
    """(B,) long index into SOURCES; None = every row "real" (what sampling asks for)."""
    if sources is None:
        return torch.zeros(batch, dtype=torch.long)
    if len(sources) != batch:
        raise ValueError(f"sources: {len(sources)} given for {batch} findings; need one each")
    bad = sorted({s for s in sources if s not in SOURCES})
    if bad:
        raise ValueError(f"sources: unknown value {bad[0]!r}; allowed: {', '.join(SOURCES)}")
    return torch.tensor([SOURCES.index(s) for s in sources], dtype=torch.long)


def label_indices(findings: list[Findings]) -> torch.Tensor:
    """(B, len(LABEL_FIELDS)) long: 0 where a field is not given, else 1 + index of its value."""
    rows = []
    for f in findings:
        row = []
        for name, allowed in LABEL_FIELDS.items():
            value = getattr(f, name)
            if value is None:
                row.append(0)
            elif value in allowed:
                row.append(1 + allowed.index(value))
            else:
                raise ValueError(
                    f"{name}: unknown value {value!r}; allowed: {', '.join(map(str, allowed))}"
                )
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)


class _Conditioner(nn.Module):
    """What both conditioners share: the null embedding, condition dropout, heart rate."""

    def __init__(self, cfg: ConditionConfig):
        super().__init__()
        self.cfg = cfg
        self.null_embedding = nn.Parameter(0.02 * torch.randn(cfg.dim))

    def null(self, batch: int) -> torch.Tensor:
        """The learned unconditional embedding, (B, D)."""
        return self.null_embedding.expand(batch, -1)

    def fusion_weights(self) -> dict[str, float]:
        """Learned fusion scalars by source; none for a conditioner without fusion."""
        return {}

    def _check(self, findings, prompts, drop_mask) -> int:
        if not findings:
            raise ValueError("findings: empty list; need at least one Findings")
        batch = len(findings)
        if prompts is not None and len(prompts) != batch:
            raise ValueError(f"prompts: {len(prompts)} given for {batch} findings; need one each")
        if drop_mask is not None and tuple(drop_mask.shape) != (batch,):
            raise ValueError(f"drop_mask: shape {tuple(drop_mask.shape)}; need ({batch},) bool")
        return batch

    def _finish(self, c: torch.Tensor, findings, drop_mask) -> tuple[torch.Tensor, torch.Tensor]:
        if drop_mask is not None:
            keep = ~drop_mask.to(device=c.device, dtype=torch.bool)
            c = torch.where(keep[:, None], c, self.null(c.shape[0]))  # (B, D)
        return c, heart_rates(findings).to(c.device)


class ClinicalConditioner(_Conditioner):
    """MiniLM over L1/L2/L3 + GraphSAGE over the patient subgraph, fused (module docstring).

    `graph`: a KnowledgeGraph; default `hldm.clinical.knowledge_graph.default_graph()`.
    """

    def __init__(self, cfg: ConditionConfig, graph=None):
        super().__init__(cfg)
        self.graph = graph if graph is not None else default_graph()
        self.text = MiniLMTextEncoder(cfg.text_trainable_layers, cfg.cache_size, cfg.text_max_tokens)
        self.text_proj = nn.Linear(len(LEVELS) * EMBED_DIM, cfg.dim)
        self.graph_encoder = PatientGraphEncoder(NODE_FEATURE_DIM, cfg.graph_hidden, cfg.dim)
        self.lambda_text = nn.Parameter(torch.tensor(cfg.fusion_init[0]))
        self.lambda_graph = nn.Parameter(torch.tensor(cfg.fusion_init[1]))
        if cfg.attributes_init is not None:
            self.attributes = AttributeEncoder(cfg)
            self.lambda_attributes = nn.Parameter(torch.tensor(float(cfg.attributes_init)))
        self.subgraphs = LRU(cfg.cache_size)  # Findings -> torch_geometric Data

    def forward(self, findings: list[Findings], prompts: list[Prompts] | None = None,
                drop_mask: torch.Tensor | None = None, sources=None):
        """-> (c (B, D), hr (B,)); prompts default to `build_prompts(findings)`."""
        batch = self._check(findings, prompts, drop_mask)
        if prompts is None:
            prompts = [build_prompts(f) for f in findings]
        texts = [p.l1 for p in prompts] + [p.l2 for p in prompts] + [p.l3 for p in prompts]
        e = self.text(texts).view(len(LEVELS), batch, EMBED_DIM)  # (3, B, 384)
        f_text = self.text_proj(e.transpose(0, 1).reshape(batch, -1))  # (B, D)
        g_graph = self.graph_encoder([self._subgraph(f) for f in findings])  # (B, D)
        dim = (self.cfg.dim,)
        c = self.lambda_text * F.layer_norm(f_text, dim) + self.lambda_graph * F.layer_norm(g_graph, dim)
        if self.cfg.attributes_init is not None:
            c = c + self.lambda_attributes * F.layer_norm(self.attributes(findings, sources), dim)
        return self._finish(c, findings, drop_mask)

    def fusion_weights(self) -> dict[str, float]:
        """The learned fusion scalars: {"text": l1, "graph": l2} (+ "attributes": l3 when present)."""
        w = {"text": self.lambda_text.item(), "graph": self.lambda_graph.item()}
        if self.cfg.attributes_init is not None:
            w["attributes"] = self.lambda_attributes.item()
        return w

    def _subgraph(self, findings: Findings):
        data = self.subgraphs.get(findings)
        if data is None:
            data = self.graph.patient_subgraph(findings)
            self.subgraphs.put(findings, data)
        return data


class AttributeEncoder(nn.Module):
    """Embeddings of the categorical attributes (LABEL_FIELDS), optionally the heart rate's
    Fourier features and the source tag, + MLP: findings -> (B, D)."""

    def __init__(self, cfg: ConditionConfig):
        super().__init__()
        e = cfg.label_embed_dim
        self.embeddings = nn.ModuleDict(
            {name: nn.Embedding(len(values) + 1, e) for name, values in LABEL_FIELDS.items()}
        )
        width = len(LABEL_FIELDS) * e
        self.rate = nn.Linear(2 * RATE_OCTAVES, e) if cfg.rate_features else None
        self.source = nn.Embedding(len(SOURCES), e) if cfg.source_tag else None
        width += e * ((self.rate is not None) + (self.source is not None))
        self.mlp = nn.Sequential(nn.Linear(width, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))

    def forward(self, findings: list[Findings], sources=None) -> torch.Tensor:
        dev = self.mlp[0].weight.device
        idx = label_indices(findings).to(dev)  # (B, 8)
        parts = [emb(idx[:, i]) for i, emb in enumerate(self.embeddings.values())]  # 8 x (B, e)
        if self.rate is not None:
            parts.append(self.rate(rate_features(heart_rates(findings).to(dev))))
        if self.source is not None:
            parts.append(self.source(source_indices(sources, len(findings)).to(dev)))
        return self.mlp(torch.cat(parts, dim=-1))  # (B, D)


class LabelConditioner(_Conditioner):
    """The attribute embeddings alone -> c; prompts are ignored."""

    def __init__(self, cfg: ConditionConfig):
        super().__init__(cfg)
        self.attributes = AttributeEncoder(cfg)

    def forward(self, findings: list[Findings], prompts: list[Prompts] | None = None,
                drop_mask: torch.Tensor | None = None, sources=None):
        """-> (c (B, D), hr (B,))."""
        self._check(findings, prompts, drop_mask)
        return self._finish(self.attributes(findings, sources), findings, drop_mask)


def build_conditioner(cfg: ConditionConfig, graph=None) -> _Conditioner:
    """The conditioner named by `cfg.kind`; `graph` only matters for "clinical"."""
    if cfg.kind == "clinical":
        return ClinicalConditioner(cfg, graph)
    return LabelConditioner(cfg)
