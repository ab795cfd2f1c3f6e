"""The one exception conversion raises for bad input: a missing, unreadable or unrepresentable checkpoint."""

from __future__ import annotations


class ConversionError(ValueError):
    """A checkpoint cannot be converted; the message names the file, key or field at fault."""
