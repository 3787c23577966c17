"""Frozen vision encoders: `semantic` (the SigLIP role) and `vq` (the LlamaGen VQ role)."""
