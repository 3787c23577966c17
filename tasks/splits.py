"""Training arms as configuration: which records of a dataset one run trains on.

mixed       understanding (vqa, caption) + generation records
und-only    understanding records only
gen-only    generation records only
step_matched  a single-task arm resampled (seeded, each record once per pass) to the mixed arm's record count, so
              it gets as many optimizer steps as mixed: the compute-confound control
repeats       how many times each task's records appear per pass, e.g. {vqa: 3, generation: 3}: a mixture weighted
              toward the tasks that need more examples (the dense world's generations follow their prompts only
              after about 60000 generations, its understanding reads the corners after about 20000 questions)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unilens.errors import UnilensError

MIXTURES = ("mixed", "und-only", "gen-only")
UND_TASKS = ("vqa", "caption")
TASKS = (*UND_TASKS, "generation")


@dataclass
class ArmConfig:
    mixture: str = "mixed"
    step_matched: bool = False
    seed: int = 0
    repeats: dict[str, int] = field(default_factory=dict)  # task -> copies per pass; a task not named appears once

    def validate(self) -> None:
        if self.mixture not in MIXTURES:
            raise UnilensError(f"unknown mixture '{self.mixture}'; choose one of {list(MIXTURES)}")
        if not isinstance(self.repeats, dict):
            raise UnilensError(f"arm.repeats must map tasks to counts, e.g. {{generation: 3}}; got {self.repeats!r}")
        for task, count in self.repeats.items():
            if task not in TASKS:
                raise UnilensError(f"arm.repeats: unknown task '{task}'; choose among {list(TASKS)}")
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise UnilensError(
                    f"arm.repeats.{task}: expected a whole number of copies, at least 1, got {count!r} "
                    "(leave a task out of the arm by choosing its mixture, not by 0 copies)"
                )
        if self.step_matched and self.mixture == "mixed":
            raise UnilensError("step_matched applies to und-only or gen-only arms; mixed is the reference")


STEP_MATCHED = "step-matched"


def arm_label(arm: dict) -> str:
    """A name that tells the compute-confound control apart: "und-only:step-matched"; otherwise the mixture."""
    return arm["mixture"] + f":{STEP_MATCHED}" * bool(arm.get("step_matched"))


def parse_arm(spec: str) -> ArmConfig:
    """The inverse of arm_label: "und-only:step-matched" -> ArmConfig("und-only", step_matched=True)."""
    mixture, _, option = spec.partition(":")
    if option not in ("", STEP_MATCHED):
        raise UnilensError(f"unknown arm option '{option}' in '{spec}'; the only option is :{STEP_MATCHED}")
    arm = ArmConfig(mixture=mixture, step_matched=bool(option))
    arm.validate()
    return arm


def select_arm(records: list[dict], arm: ArmConfig) -> list[dict]:
    arm.validate()
    records = [r for r in records for _ in range(arm.repeats.get(r["task"], 1))]
    und = [r for r in records if r["task"] in UND_TASKS]
    gen = [r for r in records if r["task"] == "generation"]
    chosen = {"mixed": und + gen, "und-only": und, "gen-only": gen}[arm.mixture]
    if not chosen:
        raise UnilensError(f"the {arm.mixture} arm has no records in this dataset")
    if arm.step_matched:
        chosen = _resample(chosen, len(und) + len(gen), arm.seed)
    return chosen


def _resample(records: list[dict], target: int, seed: int) -> list[dict]:
    """Whole passes over `records` in fresh seeded orders until `target` records, so no record is favoured."""
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    while len(out) < target:
        out.extend(records[i] for i in rng.permutation(len(records)))
    return out[:target]
