"""cnnviz: watch a convolutional neural network think and learn."""

__version__ = "0.1.0"
