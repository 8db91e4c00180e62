"""lmforge: curate, train, compress, evaluate, audit, document and serve small language models."""

__version__ = "0.1.0"
