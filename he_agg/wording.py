"""Counted nouns in messages people read: "1 upload", "2 uploads"."""

from __future__ import annotations

__all__ = ["counted"]


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` and ``noun``, plural unless the number is one."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
