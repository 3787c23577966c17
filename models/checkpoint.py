"""Checkpoints: one folder each, written atomically, with a manifest naming everything the weights depend on.

trainable.safetensors   every trained tensor (adapters, head, delimiters, LoRA or the whole LLM)
lora/                   the LoRA adapter in PEFT format (lora presets)
trainer_state.pt        optimizer, scheduler and RNG states for an exact resume
manifest.json           variant, preset, configs, base LLM / encoder / dataset paths and content hashes
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from models.features import encoder_hash, legacy_encoder_hash
from models.unified import ModelConfig
from unilens.config import from_dict
from unilens.errors import UnilensError
from unilens.io import atomic_dir, atomic_write_json, sha256_file, sha256_json

MANIFEST_VERSION = 1


def llm_hash(folder: str | Path) -> str:
    return encoder_hash(folder)  # same rule: every safetensors file plus config.json


# Files a Hugging Face tokenizer is read from. They sit beside the LLM's weights but outside llm_hash, whose rule
# (and so every recorded build tag) predates this check: their hash is recorded as a separate field.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


def tokenizer_hash(folder: str | Path) -> str:
    folder = Path(folder)
    return sha256_json({name: sha256_file(folder / name) for name in TOKENIZER_FILES if (folder / name).is_file()})


FITTED_BUFFERS = ("norm_in.", "norm_out.")  # statistics fitted on the training data, saved beside the weights


def fitted_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b for n, b in model.named_buffers() if n.startswith(FITTED_BUFFERS)}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    state.update({n: b.detach().cpu().contiguous() for n, b in fitted_buffers(model).items()})
    return state


def save_checkpoint(
    folder: str | Path, model: torch.nn.Module, manifest: dict, trainer_state: dict | None = None
) -> Path:
    folder = Path(folder)
    with atomic_dir(folder, overwrite=True) as tmp:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        if hasattr(model.llm, "peft_config"):
            model.llm.save_pretrained(str(tmp / "lora"))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer_state.pt")
        atomic_write_json(tmp / "manifest.json", {"manifest_version": MANIFEST_VERSION, **manifest})
    return folder


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise UnilensError(f"not a unilens checkpoint (no manifest.json): {folder}")
    return json.loads(path.read_text())


def check_dependencies(manifest: dict) -> None:
    """Refuse a checkpoint whose base LLM, encoders or dataset changed since it was trained."""
    problems = []
    for what, entry in manifest["dependencies"].items():
        path = Path(entry["path"])
        if not path.exists():
            problems.append(f"{what} not found at {path}")
            continue
        if not matches_recorded(what, path, entry["hash"]):
            problems.append(
                f"{what} at {path} has hash {entry_hash(what, path)[:12]} but the checkpoint was trained on "
                f"{entry['hash'][:12]}"
            )
        # checkpoints written before the tokenizer was recorded carry no "tokenizer" field and are not checked
        elif "tokenizer" in entry and (now := tokenizer_hash(path)) != entry["tokenizer"]:
            problems.append(
                f"the tokenizer files in {path} changed since the checkpoint was trained (tokenizer hash "
                f"{now[:12]}, recorded {entry['tokenizer'][:12]}): put back the tokenizer it was trained with, or "
                "retrain"
            )
    if problems:
        raise UnilensError("checkpoint does not match its dependencies: " + "; ".join(problems))


def entry_hash(what: str, path: Path) -> str:
    if what == "dataset":
        return json.loads((path / "manifest.json").read_text())["content_hash"]
    return llm_hash(path) if what == "llm" else encoder_hash(path)


def matches_recorded(what: str, path: Path, recorded: str) -> bool:
    """Whether a dependency folder is the one a checkpoint recorded: under today's hash rule, or under the legacy rule
    that older checkpoints recorded (see models.features.legacy_encoder_hash)."""
    if entry_hash(what, path) == recorded:
        return True
    return what != "dataset" and legacy_encoder_hash(path) == recorded


def current_hash(what: str, entry: dict) -> str:
    """A recorded dependency hash under today's rule: a legacy hash is translated when its folder is still there and
    unchanged, so that checkpoints of one build carry one tag whichever rule they were written under."""
    path = Path(entry["path"])
    if what != "dataset" and path.exists() and legacy_encoder_hash(path) == entry["hash"]:
        return entry_hash(what, path)
    return entry["hash"]


# Config fields added after runs had been written, with the value their absence means. Older run folders then still
# resume, and battery cells keep their content keys while such a field stays at this default.
LATER_FIELDS: dict[tuple[str, ...], object] = {
    ("model", "image_positions"): False,
    ("model", "image_order"): "raster",
    ("model", "gen_input_corruption"): 0.0,
    ("model", "gen_prompt_dropout"): 0.0,
    ("model", "und_slot_rank"): 0,
    ("model", "und_aux_loss"): {},
    ("model", "image_token_norm"): 0.0,
    ("model", "und_feature_norm"): "standardise",
    ("model", "gen_feature_norm"): "standardise",
    ("arm", "repeats"): {},
    ("lr_schedule",): "cosine",
    ("precision",): "auto",
    ("text_loss_unit",): "token",
    ("gen_region_weights",): {},
    ("answer_weights",): {},
    ("init_from",): "",
    ("init_fresh_generation",): False,
    ("init_fresh_understanding",): False,
}


def _parent(config: dict, path: tuple[str, ...], create: bool) -> dict:
    for key in path[:-1]:
        config = config.setdefault(key, {}) if create else config.get(key, {})
    return config


def later_field(config: dict, path: tuple[str, ...]) -> object:
    """The value of a later field in a run config, its default where the config predates it."""
    return _parent(config, path, create=False).get(path[-1], LATER_FIELDS[path])


def with_later_defaults(config: dict) -> dict:
    """A run config as this version writes it: later fields an older run lacks filled with their defaults."""
    config = json.loads(json.dumps(config))
    for path, default in LATER_FIELDS.items():
        _parent(config, path, create=True).setdefault(path[-1], default)
    return config


def without_later_defaults(config: dict) -> dict:
    """A run config with later fields at their defaults left out: what a content key is taken over."""
    config = json.loads(json.dumps(config))
    for path, default in LATER_FIELDS.items():
        parent = _parent(config, path, create=False)
        if path[-1] in parent and parent[path[-1]] == default:
            del parent[path[-1]]
    return config


def compare_configs(expected: dict, found: dict, where: str = "") -> list[str]:
    """Dotted names of every field that differs between two nested config dicts."""
    diffs = []
    for key in sorted(set(expected) | set(found)):
        a, b = expected.get(key), found.get(key)
        name = f"{where}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += compare_configs(a, b, name + ".")
        elif a != b:
            diffs.append(f"{name}: checkpoint has {b!r}, config asks {a!r}")
    return diffs


# parameters renamed since checkpoints were written with them: old name -> new name
RENAMED = {"und_pos": "und_pos.table", "gen_pos": "gen_pos.table"}


def load_trainable(
    model: torch.nn.Module,
    folder: str | Path,
    partial: bool = False,
    ignore: tuple[str, ...] = (),
    rename: dict[str, str] | None = None,
) -> list[str]:
    """Copy a checkpoint's trained tensors into the model. With partial, the model may train more than the checkpoint
    holds (a warm start from an adapters-only run into a LoRA run): those tensors keep their fresh values and are
    returned by name. `rename` maps a checkpoint's name prefix to the model's, before `ignore` is applied; tensors
    named with an `ignore` prefix are neither loaded nor required (the model's keep their values)."""
    state = load_file(str(Path(folder) / "trainable.safetensors"))
    state = {RENAMED.get(name, name): value for name, value in state.items()}
    for old, new in (rename or {}).items():
        state = {new + n[len(old) :] if n.startswith(old) else n: v for n, v in state.items()}
    state = {name: value for name, value in state.items() if not name.startswith(ignore)}
    expected = {n for n, p in model.named_parameters() if p.requires_grad} | set(fitted_buffers(model))
    expected = {n for n in expected if not n.startswith(ignore)}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing and all(n.startswith(FITTED_BUFFERS) for n in missing):
        raise UnilensError(
            f"checkpoint {folder} has no feature-normalisation statistics: it was written before unilens "
            "standardised encoder features; retrain it with this version"
        )
    if partial:
        missing = {n for n in missing if n.startswith(FITTED_BUFFERS)}
    if missing or unexpected:
        raise UnilensError(
            f"checkpoint {folder} does not fit this model: missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]} (was it trained with another variant or preset?)"
        )
    params = {**dict(model.named_parameters()), **fitted_buffers(model)}
    wrong = [
        f"{name} {tuple(value.shape)} vs {tuple(params[name].shape)}"
        for name, value in state.items()
        if value.shape != params[name].shape
    ]
    if wrong:
        raise UnilensError(
            f"checkpoint {folder} does not fit this model: shapes differ (checkpoint vs model) for {wrong[:3]} "
            "(was it trained with another adapter, LoRA rank or LLM?)"
        )
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
    return sorted(expected - set(state))


def saved_checkpoints(run: str | Path) -> list[Path]:
    """A run folder's complete checkpoints (those with a manifest), oldest first."""
    folder = Path(run) / "checkpoints"
    return sorted(p for p in folder.glob("step-*") if (p / "manifest.json").is_file()) if folder.is_dir() else []


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / "manifest.json").is_file() and (Path(path) / "trainable.safetensors").is_file()


def run_checkpoints(run: str | Path, label: str = "") -> list[Path]:
    """A run folder's complete checkpoints, oldest first; an error that names the path (after `label`, e.g.
    "init_from ") and the fix where there are none."""
    ckpts = saved_checkpoints(run)
    if not ckpts:
        what = "no such folder" if not Path(run).exists() else "neither a checkpoint nor a run folder with checkpoints"
        raise UnilensError(
            f"{label}{run}: {what}; give a run folder with checkpoints (train one first) or one of its "
            "checkpoints/step-* folders"
        )
    return ckpts


def last_checkpoint(path: str | Path, label: str = "") -> Path:
    """A checkpoint folder as given, or a run folder's last checkpoint."""
    return Path(path) if is_checkpoint(path) else run_checkpoints(path, label)[-1]


# Model fields a warm start may change: paths (the hashes of what they point at are checked instead) and settings that
# act on training only. Every other field shapes the parameters or what they mean (variant, adapters, distortions,
# image positions and order) and must match.
WARM_START_FREE = {
    "llm",
    "semantic_encoder",
    "vq_encoder",
    "image_loss_weight",
    "gen_input_corruption",
    "gen_prompt_dropout",
    "und_aux_loss",  # training-only heads: a stage may add or drop them (they are not carried over)
}


# A first stage that trained understanding alone (mixture und-only) never trained the generation side, which
# left these tensors at their initial values. Such a stage may therefore warm-start a run with another output space
# (sem-sem -> sem-vq, or sem-sem with another gen_feature_norm): the understanding side carries over, these start
# fresh, and these model fields may differ.
GENERATION_ONLY_TENSORS = ("gen_in.", "gen_head.", "gen_pos.", "norm_out.")
OUTPUT_SIDE_FIELDS = {"variant", "gen_adapter", "share_gen_adapter", "output_distortion", "gen_feature_norm"}


def output_side_switch(theirs: dict, ours: dict) -> bool:
    """Whether a warm start leaves the generation side fresh (GENERATION_ONLY_TENSORS not loaded), so that it may
    have another output space: from an understanding-only run to a variant with the same input space, or from any
    run with the same input space when the new run asks for it (`init_fresh_generation`)."""
    if ours.get("init_fresh_generation"):
        return _same_input_space(theirs, ours)
    return _other_output_space(theirs, ours) and theirs.get("arm", {}).get("mixture") == "und-only"


def _same_input_space(theirs: dict, ours: dict) -> bool:
    return theirs["model"]["variant"].split("-")[0] == ours["model"]["variant"].split("-")[0]


def _other_output_space(theirs: dict, ours: dict) -> bool:
    """Same input space, another output side: another variant, or the same one with its output side set otherwise
    (e.g. whitened instead of standardised generation features)."""
    return _same_input_space(theirs, ours) and any(
        theirs["model"].get(field) != ours["model"].get(field) for field in OUTPUT_SIDE_FIELDS
    )


# The mirror image: a run that trained the generation side may start a variant with the same output space and another
# input space (sem-sem -> vq-sem) when the new run asks for it (`init_fresh_understanding`). These tensors and fields
# belong to the understanding side alone; with them fresh, the LLM, the generation adapter and head, the generated
# image's positions and statistics, and <boi>/<eoi> carry over. An X-X run's one adapter is both sides': it is loaded
# as the new run's generation adapter (the new run must not share its adapter, or its input side would not be fresh).
UNDERSTANDING_ONLY_TENSORS = ("vision_in.", "und_pos.", "und_slot.", "norm_in.", "und_aux.")
INPUT_SIDE_FIELDS = {"variant", "und_adapter", "share_gen_adapter", "input_distortion", "und_feature_norm"}
INPUT_SIDE_FIELDS |= {"und_slot_rank", "image_order"}


def _shares_adapter(model_config: dict) -> bool:
    return from_dict(ModelConfig, model_config, "model config").shared


def _input_side_switch_problems(theirs: dict, ours: dict) -> list[str]:
    """Why `init_fresh_understanding` cannot start this run from that one ([] when it can)."""
    problems = []
    if theirs["model"]["variant"].split("-")[1] != ours["model"]["variant"].split("-")[1]:
        problems.append(
            f"model.variant: init_fresh_understanding keeps the generation side, so the output space must match "
            f"({theirs['model']['variant']} -> {ours['model']['variant']})"
        )
    if _shares_adapter(ours["model"]):
        problems.append(
            f"model.share_gen_adapter: {ours['model']['variant']} shares one adapter between input and output, so its "
            "input side cannot start fresh while its generation side is loaded"
        )
    return problems


def warm_start(model: torch.nn.Module, path: str | Path, deps: dict, cfg: dict) -> dict:
    """Load another run's trained weights into a new run at step 0 (an earlier stage of a curriculum); return what
    the new run's manifest records about it. The checkpoint must share this run's variant, adapters, freezing
    preset, base LLM and encoders; its dataset may differ (that is the point). One preset change is allowed: from an
    `adapters` run (LLM frozen) into any preset, whose LoRA or LLM weights then start as in a fresh run, so that a
    first stage can shape the adapters without touching the LLM. A first stage that trained understanding alone may
    also have another output space (output_side_switch): its generation-side tensors are not loaded. With
    `init_fresh_understanding` it is the other way round: another input space, the understanding side's tensors not
    loaded. A stage may add a per-slot map (und_slot_rank from 0), which starts as a no-op. Its
    feature-normalisation statistics come with its weights, because its adapters were trained on them."""
    folder = last_checkpoint(path, "init_from ")
    manifest = read_manifest(folder)
    theirs = with_later_defaults(manifest["config"])
    free = {f"model.{k}" for k in WARM_START_FREE} | {"freeze.lora_dropout"}
    from_adapters = theirs["freeze"]["preset"] == "adapters"
    if from_adapters:
        free |= {f"freeze.{k}" for k in set(cfg["freeze"]) | set(theirs["freeze"])}
    fresh_input = bool(cfg.get("init_fresh_understanding"))
    switch = output_side_switch(theirs, cfg)
    ignore = ("und_aux.",) + (GENERATION_ONLY_TENSORS if switch else ())
    rename = {}
    if switch:
        free |= {f"model.{k}" for k in OUTPUT_SIDE_FIELDS}
    if fresh_input:
        free |= {f"model.{k}" for k in INPUT_SIDE_FIELDS}
        ignore += UNDERSTANDING_ONLY_TENSORS
        if _shares_adapter(theirs["model"]):
            rename = {"vision_in.": "gen_in."}  # its one adapter is the generation adapter we keep
    added_slot_map = not theirs["model"].get("und_slot_rank") and bool(cfg["model"].get("und_slot_rank"))
    if added_slot_map:
        # a stage may add a per-slot map: it starts as a no-op (SlotwiseLowRank's zero up-projection), so the loaded
        # model computes what the checkpoint did; changing or dropping a trained map stays a mismatch
        free.add("model.und_slot_rank")
        ignore += ("und_slot.",)
    problems = _input_side_switch_problems(theirs, cfg) if fresh_input else []
    problems += [
        p
        for section in ("model", "freeze")
        for p in compare_configs(cfg[section], theirs[section], f"{section}.")
        if not any(p.split(":")[0] == f or p.startswith(f + ".") for f in free)
    ]
    for what, entry in deps.items():
        skip = (switch or fresh_input) and what not in manifest["dependencies"] and what != "llm"
        if what == "dataset" or skip:
            continue  # the new output space's encoder: the earlier stage had none
        found = manifest["dependencies"].get(what)
        if found is None or not matches_recorded(what, Path(entry["path"]), found["hash"]):
            have = "none" if found is None else found["hash"][:12]
            problems.append(f"{what}: checkpoint was trained on {have}, this run uses {entry['hash'][:12]}")
        elif "tokenizer" in found and "tokenizer" in entry and found["tokenizer"] != entry["tokenizer"]:
            problems.append(f"{what}: checkpoint was trained with another tokenizer than this run's")
    if problems:
        hint = ""
        if not switch and _other_output_space(theirs, cfg):
            hint = (
                f" (it trained {theirs['model']['variant']}'s generation too: set init_fresh_generation: true to take "
                "its understanding side and start the generation side fresh)"
            )
        raise UnilensError(f"init_from {folder} does not match this run: " + "; ".join(problems[:4]) + hint)
    fresh = load_trainable(model, folder, partial=from_adapters, ignore=ignore, rename=rename)
    weights = sha256_file(folder / "trainable.safetensors")
    record = {"path": str(folder.resolve()), "step": manifest["step"], "weights": weights}
    if switch:
        record["variant"] = theirs["model"]["variant"]  # its generation side was not loaded
        record["fresh_generation"] = True
    if fresh_input:
        record["variant"] = theirs["model"]["variant"]  # its understanding side was not loaded
        record["fresh_understanding"] = True
    if added_slot_map:
        record["added_slot_map"] = True  # its per-slot map starts at zero here
    if fresh:
        record["fresh_tensors"] = len(fresh)  # trained here but frozen in the earlier stage: fresh initial values
    return record
