"""torchtutor: the PyTorch tutorial notes as working software."""

__version__ = "0.1.0"
