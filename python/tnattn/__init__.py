"""tnattn: tensor-network attention students for local sequence-to-sequence rules."""

__version__ = "0.1.0"

__all__ = ["__version__"]
