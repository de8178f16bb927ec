"""phenaki: text-to-video stories with a causal C-ViViT tokenizer and a MaskGIT transformer."""

__version__ = "0.1.0"
