"""rftlab: rejection-sampling fine-tuning (RFT) for math word problems, and its scaling studies."""

__version__ = "0.1.0"
