"""Data: benchmark loaders and records, prompts, chat formats, tokenizers, batch iterators."""
