"""Paraphrased text for the three task formats (paper-notes section 1): VQA turns, captions, generation prompts."""

from __future__ import annotations

import numpy as np

from tasks.world import Watch
from unilens.errors import UnilensError

IMAGE_TOKEN = "<image>"

QUESTIONS: dict[str, tuple[str, ...]] = {
    "weather": (
        "What is the current weather?",
        "What weather is shown on the watch?",
        "Which weather does the watch display?",
        "What is the weather like according to the watch?",
        "Tell me the weather shown on the screen.",
        "What weather icon is displayed?",
        "How is the weather on the watch?",
        "What does the weather indicator say?",
        "Which weather condition is shown?",
        "What weather is displayed on this smart watch?",
    ),
    "time": (
        "What time does the watch show?",
        "What is the time on the watch?",
        "Tell me the time displayed.",
        "What time is it according to the watch?",
        "Read the time from the watch face.",
        "What time is shown on the clock?",
        "Which time do the hands indicate?",
        "What is the current time on this smart watch?",
        "What time is displayed?",
        "Can you tell the time shown by the watch?",
    ),
    "battery": (
        "What is the battery level?",
        "How much battery is left?",
        "What battery percentage is shown?",
        "How charged is the watch?",
        "Tell me the battery level of the watch.",
        "What does the battery indicator show?",
        "What is the remaining battery?",
        "How full is the battery?",
        "Which battery level is displayed?",
        "What percentage of battery does the watch have?",
    ),
    "battery_pos": (
        "Where is the battery displayed?",
        "In which corner is the battery indicator?",
        "Where is the battery icon located?",
        "Which corner shows the battery?",
        "Where can I see the battery level?",
        "What is the position of the battery indicator?",
        "Where on the screen is the battery?",
        "In which corner is the battery level shown?",
        "Where is the battery bar?",
        "Locate the battery indicator.",
    ),
    "weather_pos": (
        "Where is the weather displayed?",
        "In which corner is the weather icon?",
        "Where is the weather icon located?",
        "Which corner shows the weather?",
        "Where can I see the weather?",
        "What is the position of the weather indicator?",
        "Where on the screen is the weather?",
        "In which corner is the weather shown?",
        "Where is the weather symbol?",
        "Locate the weather icon.",
    ),
}
WHAT_ATTRIBUTES = ("weather", "time", "battery")
WHERE_ATTRIBUTES = ("battery_pos", "weather_pos")
ALL_ATTRIBUTES = WHAT_ATTRIBUTES + WHERE_ATTRIBUTES

CAPTION_PROMPTS = (
    "Describe this watch.",
    "Describe the smart watch in the image.",
    "What does this smart watch show?",
    "Give a description of the watch.",
    "Write a caption for this image.",
    "Describe what is displayed on the watch.",
    "Tell me about this smart watch.",
    "Provide a short description of the image.",
    "Caption this smart watch.",
    "What can you see on this watch?",
)
CAPTION_OPENINGS = ("The image shows a smart watch", "This is a smart watch", "A smart watch is shown")
GEN_REQUESTS = (
    "Can you draw a smart watch",
    "Please generate a smart watch",
    "Draw a smart watch",
    "Create an image of a smart watch",
    "Generate a picture of a smart watch",
    "Could you make a smart watch",
    "Paint a smart watch",
    "Render a smart watch",
    "I want an image of a smart watch",
    "Show me a smart watch",
)
GEN_ANSWERS = ("Here is the smart watch.", "Sure, here it is.", "Here is the image.")
UNCONDITIONAL_REQUEST = "Draw a smart watch."


def answer(watch: Watch, attribute: str) -> str:
    """The bare answer string the paper trains on."""
    if attribute == "time":
        return watch.time_str
    if attribute == "battery":
        return f"{watch.battery}%"
    return str(getattr(watch, attribute))


def clause(watch: Watch, attribute: str) -> str:
    """The attribute clause shared by captions and generation prompts."""
    return {
        "time": f", showing the time {watch.time_str}",
        "weather": f", with {watch.weather} weather displayed",
        "battery": f", with battery level {watch.battery}%",
        "weather_pos": f", with weather icon at {watch.weather_pos}",
        "battery_pos": f", with battery indicator at {watch.battery_pos}",
    }[attribute]


def _pick(rng: np.random.Generator, options: tuple):
    return options[int(rng.integers(len(options)))]


def vqa_attributes(rng: np.random.Generator) -> list[str]:
    """First a what (p=3/5) or where (p=2/5) question, then three p=0.4 chances of another turn."""
    first = _pick(rng, WHAT_ATTRIBUTES) if rng.random() < 0.6 else _pick(rng, WHERE_ATTRIBUTES)
    turns = [first]
    for _ in range(3):
        if rng.random() < 0.4:
            turns.append(_pick(rng, ALL_ATTRIBUTES))
    return turns


VQA_TURNS = ("paper", "all")


def all_attributes(rng: np.random.Generator) -> list[str]:
    """Every attribute asked once, in a random order: five questions per record instead of the paper's 1.9."""
    return [ALL_ATTRIBUTES[i] for i in rng.permutation(len(ALL_ATTRIBUTES))]


def vqa_conversation(
    watch: Watch, rng: np.random.Generator, turns: str = "paper", only: tuple[str, ...] = (), repeat: float = 0.0
) -> list[dict]:
    """A VQA record: the paper's turn layout (`vqa_attributes`), or every attribute once ("all"); `only` keeps the
    "all" layout's turns about those attributes (their order still drawn). With probability `repeat` ("all" only),
    one of the record's attributes is asked again, reworded, at a random later turn."""
    if turns not in VQA_TURNS:
        raise UnilensError(f"unknown vqa_turns '{turns}'; choose one of {list(VQA_TURNS)}")
    attrs = vqa_attributes(rng) if turns == "paper" else all_attributes(rng)
    if (only or repeat) and turns == "paper":
        raise UnilensError("restricting or repeating VQA turns needs vqa_turns: all (the paper's layout draws its own)")
    if only:
        attrs = [a for a in attrs if a in only]
    # no draw at repeat 0, so that every existing dataset stays byte-identical
    if repeat > 0 and attrs and rng.random() < repeat:
        first = int(rng.integers(len(attrs)))
        attrs.insert(int(rng.integers(first + 1, len(attrs) + 1)), attrs[first])
    conv = []
    for i, attr in enumerate(attrs):
        q = _pick(rng, QUESTIONS[attr])
        conv.append({"from": "human", "value": f"{IMAGE_TOKEN}\n{q}" if i == 0 else q, "attribute": attr})
        conv.append({"from": "gpt", "value": answer(watch, attr)})
    return conv


def described_attributes(rng: np.random.Generator) -> list[str]:
    """Time always; weather, battery and the two positions each with p=0.5."""
    return ["time"] + [a for a in ("weather", "battery", "weather_pos", "battery_pos") if rng.random() < 0.5]


def caption_conversation(watch: Watch, rng: np.random.Generator) -> list[dict]:
    attrs = described_attributes(rng)
    text = _pick(rng, CAPTION_OPENINGS) + "".join(clause(watch, a) for a in attrs) + "."
    return [
        {"from": "human", "value": f"{IMAGE_TOKEN}\n{_pick(rng, CAPTION_PROMPTS)}"},
        {"from": "gpt", "value": text, "attributes": attrs},
    ]


def generation_conversation(watch: Watch, rng: np.random.Generator) -> list[dict]:
    attrs = described_attributes(rng)
    prompt = _pick(rng, GEN_REQUESTS) + "".join(clause(watch, a) for a in attrs) + "."
    return [
        {"from": "human", "value": prompt, "attributes": attrs},
        {"from": "gpt", "value": f"{_pick(rng, GEN_ANSWERS)} {IMAGE_TOKEN}"},
    ]


def unconditional(record: dict) -> dict:
    """A generation record whose request names no attribute (its answer and image kept): the prompt that
    classifier-free guidance contrasts each real prompt with, and that `gen_prompt_dropout` trains on."""
    human, gpt = record["conversations"][:2]
    return {**record, "conversations": [{**human, "value": UNCONDITIONAL_REQUEST, "attributes": []}, gpt]}


def text_corpus(watch: Watch, rng: np.random.Generator) -> list[str]:
    """Every text the world produces for one watch, images removed: for the tokenizer and text-only pre-training."""
    out = []
    for conv in (vqa_conversation(watch, rng), caption_conversation(watch, rng), generation_conversation(watch, rng)):
        out.append(" ".join(t["value"].replace(IMAGE_TOKEN, "").strip() for t in conv))
    return out
