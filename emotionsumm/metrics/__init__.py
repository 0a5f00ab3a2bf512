"""Metrics: classification (accuracy, F1, confusion), ROUGE, the summarization and classification baselines."""
