"""Showing text from data files as text: never markup, never terminal control sequences.

Item texts go through ``safe_text`` into a ``rich.text.Text`` (which Textual
draws literally: ``[bold]`` stays ``[bold]``). Control characters, including the
ESC that starts ANSI/VT sequences, become visible symbols; bidirectional
override and isolate characters (which could reorder what the annotator reads)
are shown as their code points. Very long texts are cut for display, with a
note saying so; what is stored is never changed.
"""

from __future__ import annotations

import re

from rich.text import Text

DISPLAY_LIMIT = 20_000
_BIDI_CONTROLS = {0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069, 0x200E, 0x200F,
                  0x061C}


def _visible(ch: str) -> str:
    o = ord(ch)
    if ch in "\n":
        return ch
    if ch == "\t":
        return "    "
    if o < 0x20:
        return chr(0x2400 + o)          # ␀ ... ␟ (control pictures): ESC shows as ␛
    if o == 0x7F:
        return "\u2421"                 # ␡
    if 0x80 <= o < 0xA0:
        return f"<U+{o:04X}>"           # C1 controls, including the 8-bit CSI
    if o in _BIDI_CONTROLS:
        return f"<U+{o:04X}>"
    return ch


_NEEDS_CLEANING = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\t\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]")


def clean(s: str) -> str:
    if not _NEEDS_CLEANING.search(s):
        return s
    return "".join(_visible(c) for c in s)


def safe_text(s: str, *, limit: int = DISPLAY_LIMIT, highlight: str | None = None, style: str = "") -> Text:
    """A Text to display ``s`` literally, cut at ``limit`` characters."""
    cut = len(s) > limit
    shown = clean(s[:limit] if cut else s)
    text = Text(shown, style=style, no_wrap=False, overflow="fold")
    if highlight:
        try:
            text.highlight_regex(re.compile(highlight, re.IGNORECASE), "bold reverse")
        except re.error:
            pass
    if cut:
        text.append(f"\n\n… shown: the first {limit:,} of {len(s):,} characters.", style="italic dim")
    return text


def safe_line(s: str, width: int = 60) -> str:
    """One line for tables and titles: newlines folded, controls made visible, cut to width."""
    s = clean(" ".join(str(s).split()))
    return s if len(s) <= width else s[: width - 1] + "…"
