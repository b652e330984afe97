"""Decoder architectures: ModelConfig and presets, the Flax model, checkpoint import and export."""
