"""lmforge: curate, train, compress, evaluate, audit, document and serve small language models."""

__version__ = "0.1.0"

# Registers the loaders of lmforge's compressed folders with lmforge.models.load_model (models, a base layer,
# does not import compress).
from lmforge.compress import storage as _compressed_storage  # noqa: E402,F401
