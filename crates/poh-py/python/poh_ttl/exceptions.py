"""Exceptions of the TTL collector, as in the prototype."""

__all__ = ("TTLManagerError",)


class TTLManagerError(Exception):
    """Wraps any error raised during a TTL scan (the cause is ``__cause__``)."""
