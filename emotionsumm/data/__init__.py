"""Datasets, readers and collate functions for every task; each data object tells the model and
policy what they need (classes, tokenizer)."""
