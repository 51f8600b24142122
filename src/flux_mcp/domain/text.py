"""Text as it can be stored and shown: no NUL, no lone surrogate (what PostgreSQL, SQLite and UTF-8 refuse).

A NUL is refused by PostgreSQL's `text`; a lone surrogate (JSON may spell one, `"\\ud800"`) cannot be
encoded as UTF-8 at all, so SQLite, PostgreSQL and every JSON-RPC answer refuse it. Text from an
upstream is kept with U+FFFD in their place (`storable`); a caller's own text with a NUL is refused.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"  # shows that something was there
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """The text with each NUL and lone surrogate replaced by U+FFFD."""
    return UNSTORABLE.sub(REPLACEMENT, text)
