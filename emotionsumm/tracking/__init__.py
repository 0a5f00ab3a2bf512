"""Where metrics go: TensorBoard/CSV/MLflow loggers, plots and the progress line."""
