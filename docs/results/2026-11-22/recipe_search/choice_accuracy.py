"""Multiple-choice accuracy of a checkpoint as readout_ladder.py scores its readers: every test image asked the
weather and the weather corner as the first turn after the image, in the wording its training data uses most, and
each possible answer (then </s>) scored by its teacher-forced log-probability. Tells whether the unified model and the
fresh reader differ in what they learn or only in how they were scored (answer_token_loss.py scores every turn of
the test records, later turns included). With --second-turn, each question is asked after a first turn that asks
the other question and gives its true answer: the question then stands further from the image. Appends tidy rows to
choice_accuracy.csv.

    python docs/results/2026-11-22/recipe_search/choice_accuracy.py CHECKPOINT [--second-turn]
"""

import sys
from collections import Counter

import torch
from _common import batches, load, save_rows

from tasks.scoring import bootstrap_ci

ATTRIBUTES = {
    "weather": ("sunny", "cloudy", "raining"),
    "weather_pos": ("top-left", "top-right", "bottom-left", "bottom-right"),
}
ckpt = sys.argv[1]
second_turn = "--second-turn" in sys.argv[2:]
built, dataset, und, gen, enc = load(ckpt)
wording = {
    a: Counter(
        h["value"].removeprefix("<image>\n")
        for r in dataset.train
        if r["task"] == "vqa"
        for h in r["conversations"][::2]
        if h.get("attribute") == a
    ).most_common(1)[0][0]
    for a in ATTRIBUTES
}
watches = {r["image"]: r["watch"] for r in dataset.test if r["task"] == "vqa"}
questions, records = [], []  # questions: (attribute, truth, index of its first candidate in records)
for image, watch in watches.items():
    for attribute, values in ATTRIBUTES.items():
        questions.append((attribute, watch[attribute], len(records)))
        first = []
        if second_turn:
            other = next(a for a in ATTRIBUTES if a != attribute)
            first = [
                {"from": "human", "value": "<image>\n" + wording[other], "attribute": other},
                {"from": "gpt", "value": watch[other]},
            ]
        prefix = "" if second_turn else "<image>\n"
        for value in values:
            human = {"from": "human", "value": prefix + wording[attribute], "attribute": attribute}
            conversation = [*first, human, {"from": "gpt", "value": value}]
            records.append({"task": "vqa", "image": image, "conversations": conversation})
logps = []
with torch.no_grad():
    for _chunk, seqs, batch in batches(records, 32, enc, und, gen):
        logp = torch.log_softmax(built.model.text_logits(built.model.hidden(batch)).float(), -1)
        for b, s in enumerate(seqs):
            start, end, _ = s.answers[-1]
            targets = torch.tensor(s.ids[start:end])
            logps.append(logp[b, start - 1 : end - 1].gather(-1, targets[:, None]).sum().item())
rows = []
for attribute, values in ATTRIBUTES.items():
    correct = []
    for a, truth, first in questions:
        if a == attribute:
            scores = logps[first : first + len(values)]
            correct.append(float(values[scores.index(max(scores))] == truth))
    mean, lo, hi = bootstrap_ci(correct)
    rows.append(
        {
            "checkpoint": ckpt,
            "turn": 2 if second_turn else 1,
            "attribute": attribute,
            "wording": wording[attribute],
            "accuracy": mean,
            "lo": lo,
            "hi": hi,
            "n": len(correct),
        }
    )
    print(attribute, f"{mean:.3f} [{lo:.3f}, {hi:.3f}] n={len(correct)}")
save_rows("choice_accuracy.csv", ckpt, rows, match={"turn": 2 if second_turn else 1})
