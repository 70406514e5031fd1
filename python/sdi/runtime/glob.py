"""Redis's glob patterns (``KEYS``, ``SCAN MATCH``, ``ZSCAN MATCH``), for the RESP servers.

:func:`glob_match` follows Redis's ``stringmatchlen`` step by step, so the
odd cases (a ``[`` left open, a trailing ``\\``, reversed ranges, bytes
past 127 compared as C's signed ``char``) match as they do in Redis.
"""

from __future__ import annotations

__all__ = ["glob_match"]


def _byte(data: bytes, index: int) -> int:
    """``data[index]`` as C's signed ``char`` reads it, 0 past the end (the NUL terminator)."""
    if index >= len(data):
        return 0
    value = data[index]
    return value - 256 if value > 127 else value


def glob_match(pattern: bytes, string: bytes) -> bool:
    """Whether ``string`` matches the glob ``pattern`` exactly as Redis's ``stringmatchlen``.

    ``*``, ``?``, ``[abc]``, ``[^a-z]``, ``\\`` escapes; a ``[`` left open
    matches as Redis's does.

    >>> glob_match(b"user:*", b"user:42"), glob_match(b"h[^e]llo", b"hello")
    (True, False)
    """
    if pattern == b"*":
        return True
    try:
        return _match(pattern, 0, len(pattern), string, 0, len(string), [False])
    except RecursionError:  # pragma: no cover - thousands of '*' groups
        return False


def _match(
    pattern: bytes, p: int, plen: int, string: bytes, s: int, slen: int, skip: list[bool]
) -> bool:
    star, question, bracket, backslash = ord("*"), ord("?"), ord("["), ord("\\")
    close, caret, dash = ord("]"), ord("^"), ord("-")
    while plen and slen:
        c = _byte(pattern, p)
        if c == star:
            while plen and _byte(pattern, p + 1) == star:
                p += 1
                plen -= 1
            if plen == 1:
                return True
            while slen:
                if _match(pattern, p + 1, plen - 1, string, s, slen, skip):
                    return True
                if skip[0]:
                    return False
                s += 1
                slen -= 1
            skip[0] = True
            return False
        if c == question:
            s += 1
            slen -= 1
        elif c == bracket:
            p += 1
            plen -= 1
            negate = _byte(pattern, p) == caret
            if negate:
                p += 1
                plen -= 1
            matched = False
            here = _byte(string, s)
            while True:
                pc = _byte(pattern, p)
                if pc == backslash and plen >= 2:
                    p += 1
                    plen -= 1
                    if _byte(pattern, p) == here:
                        matched = True
                elif pc == close:
                    break
                elif plen == 0:
                    p -= 1
                    plen += 1
                    break
                elif plen >= 3 and _byte(pattern, p + 1) == dash:
                    low, high = pc, _byte(pattern, p + 2)
                    if low > high:
                        low, high = high, low
                    p += 2
                    plen -= 2
                    if low <= here <= high:
                        matched = True
                elif pc == here:
                    matched = True
                p += 1
                plen -= 1
            if negate:
                matched = not matched
            if not matched:
                return False
            s += 1
            slen -= 1
        else:
            if c == backslash and plen >= 2:
                p += 1
                plen -= 1
            if _byte(pattern, p) != _byte(string, s):
                return False
            s += 1
            slen -= 1
        p += 1
        plen -= 1
        if slen == 0:
            while _byte(pattern, p) == star and plen > 0:
                p += 1
                plen -= 1
            break
    return plen == 0 and slen == 0
