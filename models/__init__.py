"""Unified vision-language models: encoders, LLM, adapters, training, checkpoints."""
