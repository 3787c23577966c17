"""The randomly initialised unified models the benchmarks time (speed does not depend on training), by size name."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM

from models.unified import ModelConfig, UnifiedVLM

# name -> (d_model, layers, heads, feed-forward width)
SIZES = {
    "embedded": (256, 6, 4, 688),  # the embedded default's LLM
    "100M": (768, 12, 12, 2048),
    "gpu": (1024, 16, 16, 2816),  # configs/embedded_gpu.yaml's LLM (and its smoke version's)
}


def describe(size: str) -> str:
    d, layers, _, _ = SIZES[size]
    return f"{size} (d{d} x {layers})"


def make(size: str) -> UnifiedVLM:
    """A vq-vq model on a random Llama of that size, 8-dim image features, a 1024-code output vocabulary."""
    d, layers, heads, ff = SIZES[size]
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=512,
            hidden_size=d,
            intermediate_size=ff,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
        )
    )
    return UnifiedVLM(ModelConfig(variant="vq-vq"), llm, 8, 8, 1024).eval()
