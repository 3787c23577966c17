"""One training loop for every variant, arm and freezing preset: `unilens train CONFIG`.

A run folder holds its resolved config, the trainable-parameter table, a per-step log and a checkpoint series at
fractions of the run (the paper's "more data" axis). A killed run resumes from its last checkpoint and ends with
the same weights and metrics as an uninterrupted one: data order is a function of (seed, step) and the RNG,
optimizer and scheduler states are checkpointed.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from models.build import Built, build_model, build_spaces, dependencies
from models.checkpoint import (
    compare_configs,
    load_trainable,
    read_manifest,
    save_checkpoint,
    saved_checkpoints,
    warm_start,
    with_later_defaults,
)
from models.device import autocast, check_precision, pick_device
from models.presets import FreezeConfig, parameter_table
from models.reader import HEADS, labels_of
from models.sequence import Encoder, Sequence, check_text_loss_unit, collate, text_loss_weights
from models.unified import ModelConfig, grid_side
from tasks.records import load_dataset
from tasks.render import REGION_OF, region_slots
from tasks.splits import ArmConfig, select_arm
from tasks.templates import ALL_ATTRIBUTES, unconditional
from tasks.world import Watch
from unilens.config import to_dict
from unilens.errors import UnilensError
from unilens.io import atomic_write_json, atomic_write_text

DEFAULT_FRACTIONS = [round(0.1 * i, 1) for i in range(1, 11)]


@dataclass
class TrainConfig:
    dataset: str = "runs/embedded/data"
    out: str = "runs/train/default"
    arm: ArmConfig = field(default_factory=ArmConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    epochs: float = 1.0
    batch_size: int = 32
    lr_adapters: float = 2e-3
    lr_llm: float = 1e-3  # LoRA or full fine-tuning
    weight_decay: float = 0.0
    warmup: float = 0.03
    lr_schedule: str = "cosine"  # after the warm-up: "cosine" (decay to zero) or "constant"
    # The text loss's unit: "token" (a mean over supervised tokens) or "answer" (every answer, caption and generation
    # phrase counts once, whatever its length): see models.sequence.text_loss_weights.
    text_loss_unit: str = "token"
    # Extra weight on the generated image's loss at the tokens that draw an attribute its prompt names, e.g.
    # {weather: 5.0}: the tokens under the weather icon weigh 5 in every generation record that asks for a weather
    # (the image loss stays a weighted mean). Regions: weather (the icon) and battery (bar and text), at their corners
    # (tasks.render.region_slots); weather_pos and battery_pos weigh the same regions in prompts that name the corner
    # (a prompt may name an icon's corner and not its kind). Why offered: a per-token mean spends 4 of 64 VQ tokens on
    # the icon, and no vq-vq run drew the prompted weather kind (docs/results/2026-12-03, seventh part).
    gen_region_weights: dict[str, float] = field(default_factory=dict)
    # Extra weight on the text loss of the answers to named questions, e.g. {time: 4.0}: every label of a time answer
    # weighs 4 times what text_loss_unit gives it, the rest 1, and the text loss (logged too) stays a weighted mean.
    # Names: the VQA attributes and "caption". Why offered: a first stage's dial reading was lost within 788 steps of
    # the mixed data, where the time is one answer in five (docs/results/2026-12-05, sixteenth part), while a
    # reading eight times stronger survived them (vq-vq, 2026-12-03, sixth part).
    answer_weights: dict[str, float] = field(default_factory=dict)
    max_grad_norm: float = 1.0
    checkpoint_fractions: list[float] = field(default_factory=lambda: list(DEFAULT_FRACTIONS))
    divergence_factor: float = 5.0  # stop when the smoothed loss exceeds this multiple of its start
    seed: int = 0
    device: str = "auto"
    # "auto": bf16 autocast on CUDA, fp32 on CPU; "bf16" asks for autocast on CPU too (AMX CPUs); "fp32" never
    precision: str = "auto"
    cache_dir: str = "runs/cache"
    # Another run (its last checkpoint) or one checkpoint folder to start from instead of the fresh adapters: an
    # earlier stage of a curriculum, e.g. time questions only before the mixed data. It must share this run's variant,
    # adapters, preset, LLM and encoders; its dataset may differ. Only step 0 loads it; a resumed run continues from
    # its own checkpoint. "" starts fresh.
    init_from: str = ""
    # Take only init_from's understanding side (input adapter, positions, LoRA or LLM) and start the generation side
    # fresh: needed to go from a run that trained generation to another output space (an understanding-only run may
    # switch without it).
    init_fresh_generation: bool = False
    # The mirror image: take init_from's generation side (generation adapter and head, positions, statistics, LoRA or
    # LLM) and start the understanding side fresh, so that a run with the same output space and another input space
    # may continue it (sem-sem's generation-only stage -> vq-sem). Why: one generation-first stage can then start
    # every variant that shares its output space, and their comparison differs in the input space alone.
    init_fresh_understanding: bool = False

    def __post_init__(self) -> None:
        # checked when the config is made, before any model is built or folder written
        for flag in ("init_fresh_generation", "init_fresh_understanding"):
            if getattr(self, flag) and not self.init_from:
                side = flag.removeprefix("init_fresh_")
                raise UnilensError(f"{flag} starts init_from's {side} side fresh: set init_from too")
        if self.init_fresh_generation and self.init_fresh_understanding:
            raise UnilensError(
                "init_fresh_generation and init_fresh_understanding together would load only the LLM: set one"
            )
        check_lr_schedule(self.lr_schedule)
        check_precision(self.precision)
        check_text_loss_unit(self.text_loss_unit)
        check_region_weights(self.gen_region_weights)
        check_answer_weights(self.answer_weights)


def init_distributed(device: str = "auto") -> tuple[int, int]:
    """(world size, rank) from the launcher's environment (accelerate launch, torchrun); (1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 1, 0
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        dist.init_process_group(backend)
    return dist.get_world_size(), dist.get_rank()


LR_SCHEDULES = ("cosine", "constant")


def check_weights(option: str, weights: dict[str, float], allowed: list[str], unknown: str) -> None:
    """A {name: weight} option: every name among `allowed` (else "`option` names 'x', which `unknown`"), every weight
    a positive finite number."""
    for name, weight in weights.items():
        if name not in allowed:
            raise UnilensError(f"{option} names '{name}', which {unknown}; choose from {allowed}")
        if isinstance(weight, bool) or not (isinstance(weight, int | float) and math.isfinite(weight) and weight > 0):
            raise UnilensError(f"{option}[{name}] must be a positive number, got {weight!r}")


def check_region_weights(weights: dict[str, float]) -> None:
    check_weights("gen_region_weights", weights, sorted(REGION_OF), "has no drawn region")


ANSWER_NAMES = (*ALL_ATTRIBUTES, "caption")


def check_answer_weights(weights: dict[str, float]) -> None:
    check_weights("answer_weights", weights, list(ANSWER_NAMES), "no answer is")


def answer_label_weights(seq: Sequence, weights: dict[str, float]) -> list[float] | None:
    """Per position of a sequence, the `answer_weights` of the answer its label belongs to, 1 elsewhere; None when
    no answer of the sequence is weighted. The label at position p is the token at p + 1, so an answer held at
    positions start..end-1 is learnt from the labels at start-1..end-2."""
    if not any(attribute in weights for _, _, attribute in seq.answers):
        return None
    out = [1.0] * len(seq)
    for start, end, attribute in seq.answers:
        for p in range(start - 1, end - 1):
            out[p] = float(weights.get(attribute, 1.0))
    return out


def region_weights(record: dict, weights: dict[str, float], side: int) -> list[float] | None:
    """Per generated token, the `gen_region_weights` of a generation record: the weight of each attribute its prompt
    names at the tokens that draw it (the larger where two regions meet), 1 elsewhere; None for other records."""
    if not weights or record["task"] != "generation":
        return None
    out = [1.0] * (side * side)
    watch = Watch.from_dict(record["watch"])
    for attribute in record["conversations"][0].get("attributes", []):
        if attribute in weights:
            for slot in region_slots(watch, REGION_OF[attribute], side):
                out[slot] = max(out[slot], float(weights[attribute]))
    return out


def check_lr_schedule(kind: str) -> None:
    if kind not in LR_SCHEDULES:
        raise UnilensError(f"unknown lr_schedule '{kind}'; choose one of {list(LR_SCHEDULES)}")


def lr_factor(step: int, total: int, warm: int, kind: str = "cosine") -> float:
    """The learning rate's multiple at optimizer step `step`: a linear warm-up over `warm` steps, then a cosine
    decay to zero at `total`, or the full rate to the end ("constant")."""
    check_lr_schedule(kind)
    if step < warm:
        return (step + 1) / warm
    if kind == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def checkpoint_steps(total: int, fractions: list[float]) -> dict[int, float]:
    steps = {}
    for f in sorted(fractions):
        if not 0 < f <= 1:
            raise UnilensError(f"checkpoint fraction {f} is outside (0, 1]")
        steps[max(1, round(f * total))] = f
    steps[total] = 1.0
    return steps


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """Records of optimizer step `step`: consecutive slices of per-epoch seeded permutations."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.extend(perm[offset : offset + batch_size - len(out)])
    return np.array(out)


class Trainer:
    def __init__(self, cfg: TrainConfig, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.out = Path(cfg.out)
        self.world, self.rank = init_distributed(cfg.device)
        if cfg.batch_size % self.world:
            raise UnilensError(
                f"batch_size {cfg.batch_size} does not split over {self.world} processes: "
                f"make it a multiple of {self.world}"
            )
        self.device = pick_device(cfg.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.dataset = load_dataset(cfg.dataset)
        self.records = select_arm(self.dataset.train, cfg.arm)
        self.built: Built = build_model(cfg.model, cfg.freeze, seed=cfg.seed)
        self.model = self.built.model.to(self.device)
        self.und_space, self.gen_space = build_spaces(self.built, cfg.model, self.dataset, cfg.cache_dir)
        self._fit_feature_norms()
        self.encoder = Encoder(self.built.tokenizer, self.und_space.num_tokens)
        if self.gen_space.num_tokens != self.und_space.num_tokens:
            self.encoder_gen = Encoder(self.built.tokenizer, self.gen_space.num_tokens)
        else:
            self.encoder_gen = self.encoder
        self.sequences = [
            (self.encoder_gen if r["task"] == "generation" else self.encoder).record(r) for r in self.records
        ]
        # the same records with a request that names no attribute, for gen_prompt_dropout
        self.unconditional = {
            i: self.encoder_gen.record(unconditional(r))
            for i, r in enumerate(self.records)
            if r["task"] == "generation" and cfg.model.gen_prompt_dropout > 0
        }
        if cfg.gen_region_weights:
            side = grid_side(self.gen_space.num_tokens, "gen_region_weights")
            for i, r in enumerate(self.records):
                self.sequences[i].gen_weights = region_weights(r, cfg.gen_region_weights, side)
                if i in self.unconditional:  # a dropped prompt names nothing: every token weighs 1
                    self.unconditional[i].gen_weights = [1.0] * (side * side)
        if cfg.answer_weights:
            for seq in self.sequences:
                seq.label_weights = answer_label_weights(seq, cfg.answer_weights)
        if cfg.model.und_aux_loss:
            for seq, r in zip(self.sequences, self.records, strict=True):
                if r["task"] != "generation" and r.get("watch"):
                    labels = labels_of(Watch.from_dict(r["watch"]))
                    seq.und_labels = [labels[a] for a in HEADS]
        self.total_steps = max(1, math.ceil(cfg.epochs * len(self.sequences) / cfg.batch_size))
        self.ckpt_steps = checkpoint_steps(self.total_steps, cfg.checkpoint_fractions)
        self.optimizer, self.scheduler = self._optimizer()

    def _fit_feature_norms(self, max_images: int = 1024) -> None:
        """Standardisation statistics from the training images (a resumed run reloads the saved ones)."""
        images = sorted({r["image"] for r in self.records if r.get("image")})
        rng = np.random.default_rng(self.cfg.seed)
        if len(images) > max_images:
            images = sorted(rng.choice(images, max_images, replace=False).tolist())
        if not images:
            return
        und = torch.cat([self.und_space.inputs(i) for i in images])
        gen = torch.cat([self.gen_space.inputs(i) for i in images])
        self.model.fit_feature_norms(und.to(self.device), gen.to(self.device))

    def _optimizer(self):
        adapters, llm = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (llm if name.startswith("llm.") else adapters).append(p)
        groups = [{"params": adapters, "lr": self.cfg.lr_adapters}]
        if llm:
            groups.append({"params": llm, "lr": self.cfg.lr_llm})
        opt = torch.optim.AdamW(groups, weight_decay=self.cfg.weight_decay, betas=(0.9, 0.98))
        warm = max(1, round(self.cfg.warmup * self.total_steps))
        total, kind = self.total_steps, self.cfg.lr_schedule
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, warm, kind))

    def resolved_config(self) -> dict:
        return to_dict(self.cfg)

    def _prepare_run_dir(self) -> int:
        """Write or check the run's config; return the step to start from (0, or the last checkpoint's)."""
        config_path = self.out / "config.yaml"
        resolved = self.resolved_config()
        if config_path.is_file():
            existing = with_later_defaults(yaml.safe_load(config_path.read_text()))
            diffs = compare_configs(resolved, existing)
            if diffs:
                raise UnilensError(
                    f"run folder {self.out} holds a different run ({'; '.join(diffs[:4])}); "
                    "choose another out folder or delete it"
                )
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(config_path, yaml.safe_dump(resolved, sort_keys=False))
        table = parameter_table(self.model)
        atomic_write_text(self.out / "trainable_parameters.csv", table.to_csv(index=False))
        if self.progress:
            print(table.to_string(index=False))
        return self._resume()

    def checkpoints(self) -> list[Path]:
        return saved_checkpoints(self.out)

    def _resume(self) -> int:
        ckpts = self.checkpoints()
        if not ckpts:  # a run stopped before its first checkpoint starts over: so does its log
            self._truncate_log(0)
            return 0
        last = ckpts[-1]
        load_trainable(self.model, last)
        state = torch.load(last / "trainer_state.pt", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self._truncate_log(state["step"])
        if self.progress:
            print(f"resuming {self.out} from {last.name}")
        return state["step"]

    def _warm_start(self) -> dict | None:
        """Load init_from's weights before the first step (checked before the run folder is written); a resumed
        run keeps the record its checkpoints carry."""
        if not self.cfg.init_from:
            return None
        ckpts = self.checkpoints()
        if ckpts:
            return read_manifest(ckpts[-1]).get("init_from")
        record = warm_start(self.model, self.cfg.init_from, self._deps, self.resolved_config())
        if self.progress and self.main_process:
            print(f"starting from {record['path']} (step {record['step']})")
        return record

    def _truncate_log(self, step: int) -> None:
        log = self.out / "log.jsonl"
        if log.is_file() and self.main_process:
            rows = [r for r in log.read_text().splitlines() if r and json.loads(r)["step"] <= step]
            atomic_write_text(log, "".join(r + "\n" for r in rows))

    def manifest(self, step: int) -> dict:
        return {
            "step": step,
            "total_steps": self.total_steps,
            "fraction": step / self.total_steps,
            "variant": self.cfg.model.variant,
            "preset": self.cfg.freeze.preset,
            "arm": to_dict(self.cfg.arm),
            "config": self.resolved_config(),
            "dependencies": self._deps,
            "dataset_manifest": {k: self.dataset.manifest[k] for k in ("content_hash", "counts", "seed")},
            "trainable_parameters": parameter_table(self.model).to_dict(orient="records"),
            **({"init_from": self._init_record} if self._init_record else {}),
        }

    def _save(self, step: int) -> Path:
        folder = self.out / "checkpoints" / f"step-{step:06d}"
        folder.parent.mkdir(exist_ok=True)
        state = {
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        return save_checkpoint(folder, self.model, self.manifest(step), state)

    @property
    def main_process(self) -> bool:
        return self.rank == 0

    def _reduce(self, value: torch.Tensor) -> torch.Tensor:
        """Sum over data-parallel processes (identity in one process)."""
        if self.world > 1:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def _sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Sum gradients over processes. A parameter no process used keeps grad None, as in one process: AdamW
        skips it (a zero gradient would still move it by its momentum)."""
        used = self._reduce(torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.device))
        for p, n in zip(params, used.tolist(), strict=True):
            if n == 0:
                p.grad = None
                continue
            if p.grad is None:  # used elsewhere, not in this process's slice
                p.grad = torch.zeros_like(p)
            self._reduce(p.grad)

    def step_sequences(self, step: int) -> list[Sequence]:
        """This process's sequences of optimizer step `step`. Prompt dropout is drawn over the global batch from
        (seed, step), so a resumed run and any number of processes see the same sequences."""
        idx = batch_indices(step, len(self.sequences), self.cfg.batch_size, self.cfg.seed)
        rate = self.cfg.model.gen_prompt_dropout
        dropped = np.random.default_rng([self.cfg.seed, step, 1]).random(len(idx)) < rate
        chosen = [
            self.unconditional.get(i, self.sequences[i]) if d else self.sequences[i]
            for i, d in zip(idx, dropped, strict=True)
        ]
        return chosen[self.rank :: self.world]

    def step_loss(self, step: int, text_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """The model's output on this process's slice of optimizer step `step`, each loss normalised by the global
        batch's counts, exactly as training takes it. `text_scale` scales every text weight (0: the image loss
        alone, with the same normalisation, so that a gradient can be taken apart into its text and image parts)."""
        batch = collate(self.step_sequences(step), self.und_space, self.gen_space, self.encoder.pad_id).to(self.device)
        text_weights = text_loss_weights(batch.labels, self.cfg.text_loss_unit)
        if batch.label_weights is not None:
            text_weights = text_weights * batch.label_weights
        counts = self._reduce(
            torch.stack([text_weights.sum(), batch.image_loss_count, batch.und_label_count]).to(self.device)
        )
        per_label = self.cfg.text_loss_unit != "token" or text_scale != 1.0 or batch.label_weights is not None
        with autocast(self.device, self.cfg.precision):
            return self.model(
                batch,
                text_norm=counts[0].clamp(min=1),
                image_norm=counts[1].clamp(min=1),
                text_weights=text_weights * text_scale if per_label else None,
                aux_norm=counts[2].clamp(min=1),
            )

    def train(self, until_step: int | None = None) -> dict:
        """Train to the end, or stop after `until_step` (a later call resumes from the last checkpoint).
        Under `accelerate launch` / torchrun every process takes its slice of each global batch; gradients are
        summed over processes, so the run matches one process at the same global batch; process 0 writes."""
        self._deps = dependencies(self.cfg.model, self.dataset)
        self._init_record = self._warm_start()
        if self.main_process:
            start = self._prepare_run_dir()
        if self.world > 1:
            dist.barrier()
            if not self.main_process:
                start = self._resume()
        log_path = self.out / "log.jsonl"
        history = [json.loads(r) for r in log_path.read_text().splitlines()] if log_path.is_file() else []
        self.model.train()
        stop = self.total_steps if until_step is None else min(until_step, self.total_steps)
        bar = tqdm(
            range(start, stop),
            desc=f"train {self.out.name}",
            disable=not (self.progress and self.main_process),
            initial=start,
            total=self.total_steps,
        )
        t0 = time.time()
        for step in bar:
            out = self.step_loss(step)
            loss = out["loss"]
            parts = self._reduce(torch.stack([loss.detach(), out["text_loss"], out["image_loss"]]).float())
            self._guard(parts[0].item(), step, history)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainable = [p for p in self.model.parameters() if p.requires_grad]
            if self.world > 1:
                self._sum_gradients(trainable)
            torch.nn.utils.clip_grad_norm_(trainable, self.cfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            row = {
                "step": step + 1,
                "loss": parts[0].item(),
                "text_loss": parts[1].item(),
                "image_loss": parts[2].item(),
                "lr": self.scheduler.get_last_lr()[0],
            }
            for key in sorted(k for k in out if k.startswith("aux_")):
                row[key] = self._reduce(out[key].float().clone()).item()
            history.append(row)
            if self.main_process:
                with open(log_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
            bar.set_postfix(
                loss=f"{row['loss']:.3f}", sps=f"{(step + 1 - start) * self.cfg.batch_size / (time.time() - t0):.0f}"
            )
            if step + 1 in self.ckpt_steps and self.main_process:
                self._save(step + 1)
        if self.world > 1:
            dist.barrier()
        if stop < self.total_steps:
            return {"stopped_at": stop}
        summary = self._summary(history)
        if self.main_process:
            atomic_write_json(self.out / "summary.json", summary)
        return summary

    def _guard(self, loss: float, step: int, history: list[dict]) -> None:
        last = self.checkpoints()
        keep = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written yet"
        if not math.isfinite(loss):
            raise UnilensError(
                f"loss is {loss} at step {step + 1}: training diverged (likely cause: learning rate too high, "
                f"lr_adapters={self.cfg.lr_adapters}, lr_llm={self.cfg.lr_llm}; lower them); {keep}"
            )
        if len(history) >= 20:
            start = np.mean([h["loss"] for h in history[:10]])
            recent = np.mean([h["loss"] for h in history[-5:]] + [loss])
            if recent > self.cfg.divergence_factor * start:
                raise UnilensError(
                    f"loss exploded to {recent:.3g} at step {step + 1} (start {start:.3g}; likely cause: learning "
                    f"rate too high, lower lr_adapters / lr_llm); {keep}"
                )

    def _summary(self, history: list[dict]) -> dict:
        def mean(key: str, rows: list[dict]) -> float:
            return float(np.mean([r[key] for r in rows])) if rows else float("nan")

        head, tail = history[:10], history[-10:]
        return {
            "steps": self.total_steps,
            "records": len(self.sequences),
            "world_size": self.world,
            "first_loss": mean("loss", head),
            "final_loss": mean("loss", tail),
            "final_text_loss": mean("text_loss", tail),
            "final_image_loss": mean("image_loss", tail),
            **{f"final_{k}": mean(k, tail) for k in sorted(tail[-1]) if k.startswith("aux_")},
            "checkpoints": [p.name for p in self.checkpoints()],
        }


def train(cfg: TrainConfig, progress: bool = True, until_step: int | None = None) -> dict:
    return Trainer(cfg, progress).train(until_step)
