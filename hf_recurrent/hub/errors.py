"""The exceptions of the Hub tools: bad input to export, and what push cannot do (no token, no network)."""

from __future__ import annotations


class ExportError(ValueError):
    """A model folder cannot be exported; the message names the file or field at fault."""


class PushError(RuntimeError):
    """An upload to the Hub failed; the message says why and what to do."""
