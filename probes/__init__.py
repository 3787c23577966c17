"""Activations, probes, patching and attribution over trained unified models."""
