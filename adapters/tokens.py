"""A fast token estimate for when the vendor does not report usage (no tokenizer download).

About four characters per token for English text; CJK and emoji run closer to one token
per character, so characters outside Latin ranges count more. Good to ~20% on typical text,
which is what budgets and context-window checks need before a call is made.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["estimate_tokens", "estimate_messages_tokens"]

# per-message framing the vendors add (role markers, separators)
_MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    """Estimated token count of `text` (0 for the empty string).

    Args:
        text: Any text.
    """
    if not text:
        return 0
    n = len(text)
    if text.isascii():
        return (n + 3) // 4
    # non-ASCII: count wide characters at ~1 token each, the rest at ~4 chars per token
    wide = sum(1 for ch in text if ord(ch) >= 0x2E80)
    return wide + (n - wide + 3) // 4


def estimate_messages_tokens(contents: Iterable[str]) -> int:
    """Estimated input tokens of a conversation given each message's content.

    Args:
        contents: The content of each message, in order.
    """
    return sum(estimate_tokens(c) + _MESSAGE_OVERHEAD for c in contents)
