"""GraphSAGE encoder of a patient's knowledge-graph subgraph (H-LDM: g_graph).

Each patient subgraph (hldm.clinical.knowledge_graph.KnowledgeGraph.patient_subgraph)
holds the patient's finding nodes, a "patient" node linked to them and the
condition nodes they reach. Two SAGEConv layers let the patient node read its
findings (1 hop) and the conditions those findings point to (2 hops); the
embedding is read out at the patient node.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from torch_geometric.data import Data


class PatientGraphEncoder(nn.Module):
    """`forward(graphs: list[Data]) -> (B, dim)`, one row per patient subgraph."""

    def __init__(self, in_dim: int, hidden: int, dim: int):
        super().__init__()
        # Imported when a model is built: torch_geometric (and the transformers it pulls in) cost
        # ~2 s of CPU, which the app's page would otherwise wait for while the model loads.
        from torch_geometric.nn import SAGEConv

        self.conv1 = SAGEConv(in_dim, hidden)
        self.conv2 = SAGEConv(hidden, dim)

    def forward(self, graphs: list[Data]) -> torch.Tensor:
        from torch_geometric.data import Batch

        local = torch.tensor([int(g.patient_index) for g in graphs])
        batch = Batch.from_data_list(graphs).to(self.conv1.lin_l.weight.device)
        # The knowledge graph stores every edge in both directions, so findings reach the patient.
        h = F.relu(self.conv1(batch.x.float(), batch.edge_index))  # (N, hidden)
        h = self.conv2(h, batch.edge_index)  # (N, dim)
        return h[batch.ptr[:-1] + local.to(h.device)]  # (B, dim)
