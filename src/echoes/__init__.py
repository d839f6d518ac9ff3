"""echoes: train and compare temporal neural architectures on the same data, every run tracked."""

__version__ = "0.1.0"
