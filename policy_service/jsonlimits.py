"""One bounded JSON parser for everything the service reads from outside: request bodies and manifests.

Python's ``json`` module recurses once per nesting level, so a 2 KB body of 1,000 nested ``[`` raises
``RecursionError`` (an unhandled 500), and a manifest with the same nesting broke a reload. Every untrusted
document goes through :func:`loads_bounded` instead, which checks, before ``json.loads`` builds anything:

* the size (``max_bytes``);
* the encoding: UTF-8 only (RFC 8259 section 8.1; ``json.loads`` on bytes would also guess UTF-16/32);
* the nesting depth (``max_depth`` arrays/objects), measured by one scan over the bracket characters outside
  strings (regular expressions, so C speed: ~1 ms for 64 KiB).

After parsing, :func:`find_nul` finds a string holding a NUL byte (a file name with one cannot be opened and
is never legitimate in a manifest). Failures raise :class:`JSONLimitError` (a ``ValueError``) whose message
says which limit was hit and where.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "JSONLimitError", "find_nul", "json_depth", "loads_bounded"]

#: Deepest nesting accepted: a decide body nests 4 levels, a manifest about 5 (json.loads fails near 1,000).
MAX_JSON_DEPTH = 64

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JSONLimitError(ValueError):
    """A JSON document is too large, too deep, not UTF-8, not JSON, or holds a forbidden value."""


def json_depth(raw: bytes) -> int:
    """The deepest array/object nesting in ``raw`` (brackets inside strings do not count).

    Malformed input gives some number rather than an error; the parser reports malformation afterwards.
    """
    brackets = _BRACKET.findall(_STRING.sub(b"", raw))
    if not brackets:
        return 0
    return max(0, *accumulate(_STEP[b[0]] for b in brackets))


def loads_bounded(raw: bytes, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH, what: str = "body") -> Any:
    """``json.loads(raw)`` within limits; :class:`JSONLimitError` names the limit that ``raw`` breaks.

    ``NaN`` and ``Infinity`` literals are read (callers validate them with a field-named message).
    """
    if len(raw) > max_bytes:
        raise JSONLimitError(f"{what} is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONLimitError(
            f"{what} is not UTF-8 ({exc.reason} at byte {exc.start}); send UTF-8 JSON"
        ) from None
    depth = json_depth(raw)
    if depth > max_depth:
        raise JSONLimitError(f"{what} nests {depth} levels of arrays/objects; the limit is {max_depth}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONLimitError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # unreachable with max_depth well below the interpreter's limit; kept as a guard
        raise JSONLimitError(f"{what} nests too deeply to parse") from None


def find_nul(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (key or value) in ``value`` holding a NUL byte, else ``None``."""
    if isinstance(value, str):
        return (path or "(root)") if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if "\x00" in str(k):
                return sub
            found = find_nul(v, sub)
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = find_nul(v, f"{path}.{i}" if path else str(i))
            if found:
                return found
    return None
