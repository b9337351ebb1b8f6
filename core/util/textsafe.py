"""Text from data and config, made safe to show: never markup, never a terminal control sequence.

One sanitiser for every place labelloop shows text it did not write itself: the CLI
(ids, labels, splits, actors, error messages, the rejects file) and the workstation
(item texts, guidelines, taxonomy reasons, label names, toasts). Control characters,
including the ESC that starts ANSI/VT/OSC sequences, become visible symbols; C1
controls (the 8-bit CSI among them) and bidirectional overrides and isolates (which
reorder what a reader sees) are shown as their code points. What is stored is never
changed: this is for display only.
"""

from __future__ import annotations

import json
import re

_BIDI_CONTROLS = frozenset(
    {0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069, 0x200E, 0x200F, 0x061C}
)
_NEEDS_CLEANING = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _visible(ch: str, keep_newlines: bool) -> str:
    o = ord(ch)
    if ch == "\n":
        return ch if keep_newlines else "\u2424"  # ␤
    if ch == "\t":
        return "    " if keep_newlines else " "
    if o < 0x20:
        return chr(0x2400 + o)  # control pictures: ESC shows as ␛, BEL as ␇
    if o == 0x7F:
        return "\u2421"  # ␡
    if 0x80 <= o < 0xA0 or o in _BIDI_CONTROLS or o in (0x2028, 0x2029):
        return f"<U+{o:04X}>"  # C1 controls (8-bit CSI), bidi overrides, separators
    return ch


def clean(s: object, *, keep_newlines: bool = True) -> str:
    """``s`` as text with every control character made visible (newlines kept unless asked)."""
    s = s if isinstance(s, str) else str(s)
    if not _NEEDS_CLEANING.search(s):
        return s
    return "".join(_visible(c, keep_newlines) for c in s)


def safe_line(s: object, width: int | None = 60) -> str:
    """One line for tables, titles and messages: whitespace folded, controls visible, cut to width."""
    s = clean(" ".join(str(s).split()), keep_newlines=False)
    if width is not None and len(s) > width:
        return s[: width - 1] + "…"
    return s


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def safe_json(obj, **kw) -> str:
    """JSON that a terminal can print: exact data, readable non-ASCII text, but DEL, C1 controls and
    bidi overrides escaped as \\uXXXX (json escapes the C0 controls itself)."""
    text = json.dumps(obj, ensure_ascii=False, **kw)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
