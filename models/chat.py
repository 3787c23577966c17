"""The conversation template shared by text-only pre-training and the unified model, so 'LLM frozen' means the
LLM already knows the format."""

from __future__ import annotations

from tasks.templates import IMAGE_TOKEN

USER = "USER: "
ASSISTANT = "\nASSISTANT: "
TURN_END = "\n"


def strip_image(text: str) -> str:
    return text.replace(IMAGE_TOKEN, "").strip()


def conversation_text(conversations: list[dict]) -> str:
    """A whole conversation as plain text, images removed (for tokenizer training and text-only pre-training)."""
    parts = []
    for human, gpt in zip(conversations[::2], conversations[1::2], strict=True):
        parts.append(USER + strip_image(human["value"]) + ASSISTANT + strip_image(gpt["value"]) + TURN_END)
    return "".join(parts)
