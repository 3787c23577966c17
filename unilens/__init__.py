"""unilens: does knowledge learned from image generation reach image understanding in a unified VLM, and where?"""

__version__ = "0.1.0"
