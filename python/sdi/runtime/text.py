"""Small text checks shared by the protocol parsers.

>>> is_decimal("42"), is_decimal("\\u00b2"), is_decimal(""), is_decimal("-1")
(True, False, False, False)
"""

from __future__ import annotations

__all__ = ["is_decimal"]


def is_decimal(text: str) -> bool:
    """Whether ``text`` is one or more ASCII digits.

    ``str.isdigit()`` alone also accepts digits such as ``\\u00b2`` (superscript
    two) that ``int()`` refuses, which would turn bad input into a crash.
    """
    return text.isascii() and text.isdigit()
