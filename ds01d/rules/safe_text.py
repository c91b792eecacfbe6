"""Text that another user controls, made safe to show on a terminal.

Container names, labels, GPU device ids in a raw API request and Docker's own error
messages can carry escape sequences: shown raw they clear or retitle an admin's or
another user's terminal, or hide text (bidi overrides).  Every place ds01d shows such
text to a person (the status screen, the CLI, the journal's MESSAGE) passes it through
`printable` first; the escaped form keeps what was there visible.
"""

from __future__ import annotations

from typing import Any


def printable(text: str) -> str:
    """`text` with every control, format (bidi, zero-width) or separator character other
    than the plain space written as \\xNN, \\uNNNN or \\UNNNNNNNN."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable_tree(value: Any) -> Any:
    """Every string in a decoded JSON document (keys too) passed through `printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list):
        return [printable_tree(v) for v in value]
    if isinstance(value, dict):
        return {printable_tree(k): printable_tree(v) for k, v in value.items()}
    return value
