"""Clinical layer: vocabulary, validation, knowledge graph and L1/L2/L3 prompts (no torch at import)."""
from hldm.clinical.knowledge_graph import CONDITION_PROFILES, KnowledgeGraph, default_graph
from hldm.clinical.prompts import Prompts, build_prompts, findings_from_prompt, parse_l2
from hldm.clinical.validation import FindingsError, validate, validate_dict
from hldm.clinical.vocabulary import CONDITIONS, Findings

__all__ = ["CONDITIONS", "CONDITION_PROFILES", "Findings", "FindingsError", "KnowledgeGraph", "Prompts",
           "build_prompts", "default_graph", "findings_from_prompt", "parse_l2", "validate", "validate_dict"]
