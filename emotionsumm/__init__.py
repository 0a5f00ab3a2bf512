"""emotionsumm: a Hydra-composed PyTorch experiment framework for emotion recognition and
dialogue summarization. Importing the package stays light (no torch) so that composing a
config is instant."""

__version__ = "0.1.0"
