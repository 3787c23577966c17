"""TransformerLens on a trained unified model: the LLM (LoRA merged) wrapped as a TransformerBridge, on a copy
because the bridge mutates the module it wraps. Feed it `model.embed(batch)`: a float input is taken as input
embeddings, so image-bearing sequences go through TL's tools (attention patterns, logit lens, its hooks)."""

from __future__ import annotations

import copy

import torch

from models.unified import UnifiedVLM


def merged_llm(model: UnifiedVLM) -> torch.nn.Module:
    """A standalone copy of the LLM with any LoRA update merged into its weights."""
    llm = copy.deepcopy(model.llm)
    return llm.merge_and_unload() if hasattr(llm, "merge_and_unload") else llm


def to_bridge(model: UnifiedVLM):
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    llm = merged_llm(model).eval()
    architecture = type(llm).__name__
    return build_bridge_from_module(llm, architecture, hf_config=llm.config)
