"""Named freezing presets: what trains. Recorded in every checkpoint.

adapters     LLM frozen; adapters, image delimiters and image head trained
lora         + LoRA (peft) inside the LLM only
lora-layers  + LoRA restricted to chosen LLM layers (the causal localisation control)
full         everything trains, the LLM included
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import pandas as pd
from torch import nn

from unilens.errors import UnilensError

PRESETS = ("adapters", "lora", "lora-layers", "full")
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class FreezeConfig:
    preset: str = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    lora_layers: list[int] = field(default_factory=list)  # for lora-layers

    def validate(self, n_layers: int) -> None:
        if self.preset not in PRESETS:
            raise UnilensError(f"unknown freezing preset '{self.preset}'; choose one of {list(PRESETS)}")
        if self.preset == "lora-layers":
            if not self.lora_layers:
                raise UnilensError("preset lora-layers needs lora_layers, e.g. lora_layers: [0, 1, 2]")
            bad = [i for i in self.lora_layers if not 0 <= i < n_layers]
            if bad:
                raise UnilensError(f"lora_layers {bad} are outside the LLM's layers 0..{n_layers - 1}")
        elif self.lora_layers:
            raise UnilensError(f"lora_layers is only used by preset lora-layers, not '{self.preset}'")


def preset_label(preset: str, lora_layers: list[int] | None = None) -> str:
    """A name that tells lora-layers runs apart: "lora-layers:0-2", "lora-layers:0,4"; other presets unchanged."""
    if preset != "lora-layers":
        return preset
    layers = sorted(lora_layers or [])
    contiguous = len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1))
    return f"lora-layers:{layers[0]}-{layers[-1]}" if contiguous else "lora-layers:" + ",".join(map(str, layers))


def manifest_preset(manifest: dict) -> str:
    """The preset label of a checkpoint, from its manifest."""
    return preset_label(manifest["preset"], manifest["config"]["freeze"].get("lora_layers"))


def parse_preset(spec: str) -> tuple[str, list[int]]:
    """The inverse of preset_label: "lora" -> ("lora", []), "lora-layers:0-2" -> ("lora-layers", [0, 1, 2])."""
    name, _, layers = spec.partition(":")
    if name not in PRESETS:
        raise UnilensError(f"unknown freezing preset '{spec}'; choose one of {list(PRESETS)} (lora-layers:0-2 form)")
    if name != "lora-layers":
        if layers:
            raise UnilensError(f"preset '{name}' takes no layer list; only lora-layers does (e.g. lora-layers:0-2)")
        return name, []
    try:
        if "-" in layers:
            lo, hi = (int(x) for x in layers.split("-"))
            chosen = list(range(lo, hi + 1))
        else:
            chosen = [int(x) for x in layers.split(",")]
    except ValueError:
        chosen = []
    if not chosen:
        raise UnilensError(f"cannot read the layers of '{spec}': write lora-layers:0-2 or lora-layers:0,4")
    return name, chosen


def apply_preset(model: nn.Module, cfg: FreezeConfig) -> nn.Module:
    """Freeze/unfreeze `model` (a UnifiedVLM) in place; wraps its LLM with LoRA for the lora presets."""
    n_layers = model.base_llm.config.num_hidden_layers
    cfg.validate(n_layers)
    for p in model.llm.parameters():
        p.requires_grad_(cfg.preset == "full")
    if cfg.preset in ("lora", "lora-layers"):
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_targets),
            layers_to_transform=sorted(cfg.lora_layers) if cfg.preset == "lora-layers" else None,
            bias="none",
        )
        with warnings.catch_warnings():
            # peft reads the LLM's `is_gradient_checkpointing`, which transformers has deprecated: a warning on every
            # run that no setting of ours can answer
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model.llm = get_peft_model(model.llm, lora)
    for module in (model.vision_in, model.gen_in, model.gen_head):
        for p in module.parameters():
            p.requires_grad_(True)
    model.boi.requires_grad_(True)
    model.eoi.requires_grad_(True)
    if model.cfg.position_kind != "none":
        for module in (model.und_pos, model.gen_pos):
            module.requires_grad_(True)
    if model.cfg.und_slot_rank:
        model.und_slot.requires_grad_(True)
    if model.cfg.und_aux_loss:
        model.und_aux.requires_grad_(True)
    for buf_owner in (model.distort_in, model.distort_out):
        for p in buf_owner.parameters():
            p.requires_grad_(False)
    return model


def component(name: str) -> str:
    if name.startswith("llm."):
        return "llm.lora" if "lora_" in name else "llm.base"
    if name in ("boi", "eoi"):
        return "image_delimiters"
    if name.startswith(("und_pos.", "gen_pos.")):
        return "image_positions"
    return name.split(".")[0]


def parameter_table(model: nn.Module) -> pd.DataFrame:
    """Trainable and total parameters per component (shared adapters are counted once, under vision_in)."""
    rows: dict[str, dict[str, int]] = {}
    for name, p in model.named_parameters():  # named_parameters skips the shared gen_in duplicate
        row = rows.setdefault(component(name), {"trainable": 0, "total": 0})
        row["total"] += p.numel()
        row["trainable"] += p.numel() if p.requires_grad else 0
    table = pd.DataFrame([{"component": k, **v} for k, v in rows.items()])
    if model.gen_in is model.vision_in:
        table.loc[table["component"] == "vision_in", "component"] = "vision_in (= gen_in, shared)"
    total = {"component": "total", "trainable": table["trainable"].sum(), "total": table["total"].sum()}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)
