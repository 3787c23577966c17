"""Build a unified model from its config, and rebuild one from a checkpoint folder alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from models.checkpoint import check_dependencies, load_trainable, read_manifest
from models.encoders.semantic import load_semantic
from models.encoders.vq import load_vq
from models.features import build_space
from models.lm import load_llm
from models.presets import FreezeConfig, apply_preset
from models.unified import ModelConfig, UnifiedVLM
from tasks.records import WorldDataset
from unilens.config import from_dict


def load_encoder(space: str, cfg: ModelConfig):
    return load_semantic(cfg.semantic_encoder) if space == "semantic" else load_vq(cfg.vq_encoder)


def encoder_dir(space: str, cfg: ModelConfig) -> str:
    return cfg.semantic_encoder if space == "semantic" else cfg.vq_encoder


@dataclass
class Built:
    model: UnifiedVLM
    tokenizer: object
    encoders: dict  # space name -> encoder


def build_model(cfg: ModelConfig, freeze: FreezeConfig, seed: int = 0) -> Built:
    """Base LLM + encoders from their folders; adapters and head freshly initialised with `seed`."""
    und_space, gen_space = cfg.spaces
    encoders = {space: load_encoder(space, cfg) for space in {und_space, gen_space}}
    llm, tokenizer = load_llm(cfg.llm)
    torch.manual_seed(seed)
    gen_vocab = encoders[gen_space].codebook_size if gen_space == "vq" else None
    und, gen = encoders[und_space], encoders[gen_space]
    model = UnifiedVLM(cfg, llm, und.feature_dim, gen.feature_dim, gen_vocab, und.num_tokens, gen.num_tokens)
    apply_preset(model, freeze)
    return Built(model, tokenizer, encoders)


def build_spaces(built: Built, cfg: ModelConfig, dataset: WorldDataset, cache_dir: str | Path):
    und_space, gen_space = cfg.spaces
    spaces = {
        s: build_space(built.encoders[s], encoder_dir(s, cfg), dataset, cache_dir) for s in {und_space, gen_space}
    }
    return spaces[und_space], spaces[gen_space]


def dependencies(cfg: ModelConfig, dataset: WorldDataset) -> dict:
    from models.checkpoint import entry_hash, tokenizer_hash

    und_space, gen_space = cfg.spaces
    deps = {"llm": Path(cfg.llm), "dataset": dataset.folder}
    for space in {und_space, gen_space}:
        deps[f"{space}_encoder"] = Path(encoder_dir(space, cfg))
    recorded = {k: {"path": str(v.resolve()), "hash": entry_hash(k, v)} for k, v in deps.items()}
    recorded["llm"]["tokenizer"] = tokenizer_hash(deps["llm"])
    return recorded


def load_checkpoint(folder: str | Path, check: bool = True) -> tuple[Built, dict]:
    """Rebuild the trained model from a checkpoint folder alone (its manifest names everything else)."""
    manifest = read_manifest(folder)
    if check:
        check_dependencies(manifest)
    cfg = from_dict(ModelConfig, manifest["config"]["model"], "checkpoint model config")
    freeze = from_dict(FreezeConfig, manifest["config"]["freeze"], "checkpoint freeze config")
    deps = manifest["dependencies"]
    cfg.llm = deps["llm"]["path"]
    if "semantic_encoder" in deps:
        cfg.semantic_encoder = deps["semantic_encoder"]["path"]
    if "vq_encoder" in deps:
        cfg.vq_encoder = deps["vq_encoder"]["path"]
    built = build_model(cfg, freeze, seed=manifest["config"]["seed"])
    load_trainable(built.model, folder)
    built.model.eval()
    return built, manifest
