"""A copy of the embedded dataset whose training records keep only some VQA questions (no captions, no generation):
the control "does the rest of the training data stop the unified model from learning what a fresh reader learns?".
Images and test records are unchanged; the cached encoder features are copied under the new dataset's key. With
--split, every kept question becomes a record of its own (one question per sequence, its attribute in the id). With
--one-template, every question of an attribute is asked in one wording (the one most often drawn), in the test
records too, so that the score measures what was learned and not the step to unseen wordings. With --every-image,
every training image gets one record per named attribute in that one wording, whether or not the world asked it
(the data a fresh reader in readout_ladder.py trains on); it implies --split and --one-template. With --two-turns,
every training image instead gets one record asking all the named attributes, one per turn, in a seeded random
order: the same questions as --every-image, at varying distances from the image.

    python docs/results/2026-11-22/recipe_search/filtered_dataset.py OUT [--split] [--one-template]
        [--every-image | --two-turns] ATTRIBUTE ...
"""

import json
import random
import shutil
import sys
from collections import Counter
from pathlib import Path

from tasks.templates import answer
from tasks.world import Watch
from unilens.io import sha256_json

source, out = Path("runs/embedded/data"), Path(sys.argv[1])
every_image = "--every-image" in sys.argv[2:]
two_turns = "--two-turns" in sys.argv[2:]
split = every_image or "--split" in sys.argv[2:]
one_template = every_image or two_turns or "--one-template" in sys.argv[2:]
keep = set(sys.argv[2:]) - {"--split", "--one-template", "--every-image", "--two-turns"}
order = random.Random(0)
IMAGE = "<image>\n"
source_records = [json.loads(line) for line in (source / "train.jsonl").read_text().splitlines()]
wordings = Counter(
    (h["attribute"], h["value"].removeprefix(IMAGE))
    for r in source_records
    if r["task"] == "vqa"
    for h in r["conversations"][::2]
)
canonical = {}
for (attribute, text), _ in wordings.most_common():
    canonical.setdefault(attribute, text)
records = []
for record in source_records:
    if record["task"] != "vqa":
        continue
    if every_image:
        watch = Watch.from_dict(record["watch"])
        for attribute in sorted(keep):
            human = {"from": "human", "value": IMAGE + canonical[attribute], "attribute": attribute}
            gpt = {"from": "gpt", "value": answer(watch, attribute)}
            records.append({**record, "id": f"{record['id']}_{attribute}", "conversations": [human, gpt]})
        continue
    if two_turns:
        watch = Watch.from_dict(record["watch"])
        convs = []
        for k, attribute in enumerate(order.sample(sorted(keep), len(keep))):
            text = (IMAGE if k == 0 else "") + canonical[attribute]
            convs += [
                {"from": "human", "value": text, "attribute": attribute},
                {"from": "gpt", "value": answer(watch, attribute)},
            ]
        records.append({**record, "conversations": convs})
        continue
    turns = [
        ({**h, "value": canonical[h["attribute"]]} if one_template else h, g)
        for h, g in zip(record["conversations"][::2], record["conversations"][1::2], strict=True)
        if h.get("attribute") in keep
    ]
    if not turns:
        continue
    if split:
        for human, gpt in turns:
            human = {**human, "value": IMAGE + human["value"].removeprefix(IMAGE)}
            records.append({**record, "id": f"{record['id']}_{human['attribute']}", "conversations": [human, gpt]})
        continue
    convs = []
    for k, (human, gpt) in enumerate(turns):
        human = {**human, "value": (IMAGE if k == 0 else "") + human["value"].removeprefix(IMAGE)}
        convs += [human, gpt]
    records.append({**record, "conversations": convs})
tmp = out.with_name(out.name + ".tmp")
shutil.rmtree(tmp, ignore_errors=True)
shutil.copytree(source, tmp)
(tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
if one_template:
    test = [json.loads(line) for line in (source / "test.jsonl").read_text().splitlines()]
    for record in test:
        for human in record["conversations"][::2] if record["task"] == "vqa" else []:
            prefix = IMAGE if human["value"].startswith(IMAGE) else ""
            human["value"] = prefix + canonical[human["attribute"]]
    (tmp / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
manifest = json.loads((source / "manifest.json").read_text())
old_hash = manifest["content_hash"]
options = {
    **({"split": True} if split else {}),
    **({"one_template": True} if one_template else {}),
    **({"every_image": True} if every_image else {}),
    **({"two_turns": True} if two_turns else {}),
}
manifest["content_hash"] = sha256_json({"source": old_hash, "keep": sorted(keep), **options})
manifest["derived"] = {
    "from": str(source),
    "train_vqa_attributes": sorted(keep),
    **options,
    "train_records": len(records),
}
(tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
shutil.rmtree(out, ignore_errors=True)
tmp.replace(out)
for cached in Path("runs/cache").glob(f"{old_hash[:16]}-*"):
    shutil.copy(cached, cached.with_name(cached.name.replace(old_hash[:16], manifest["content_hash"][:16])))
print(f"wrote {out}: {len(records)} training records, questions {sorted(keep)}")
