"""Metrics: classification (accuracy, F1, confusion), ROUGE and the summarization baselines."""
