"""Small helpers shared across layers (pure python)."""
from .hashing import sha256_file

__all__ = ['sha256_file']
