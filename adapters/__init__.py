"""Provider adapters: one module per vendor behind `LLMAdapter`.

Importing this package does not import any vendor SDK; each adapter imports its SDK when it
creates its client.
"""

from __future__ import annotations

from adapters.anthropic import AnthropicAdapter
from adapters.base import Completion, LLMAdapter, Message, Price, StreamEnd, StreamEvent, TextDelta
from adapters.errors import (
    AdapterError,
    AuthError,
    BadRequest,
    ConnectionFailed,
    ContentFiltered,
    ContextTooLong,
    InvalidInput,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
)
from adapters.gemini import GeminiAdapter
from adapters.openai import OpenAIAdapter
from adapters.openai_compat import CompatibleEndpoint, OpenAICompatibleAdapter
from adapters.registry import ADAPTER_KINDS, build_adapter
from adapters.simulated import MidStream, SimulatedAdapter
from adapters.tokens import estimate_tokens

__all__ = [
    "ADAPTER_KINDS",
    "AdapterError",
    "AnthropicAdapter",
    "AuthError",
    "BadRequest",
    "CompatibleEndpoint",
    "ConnectionFailed",
    "Completion",
    "ContentFiltered",
    "ContextTooLong",
    "GeminiAdapter",
    "InvalidInput",
    "LLMAdapter",
    "Message",
    "MidStream",
    "OpenAIAdapter",
    "OpenAICompatibleAdapter",
    "Overloaded",
    "Price",
    "ProviderError",
    "RateLimited",
    "ServerError",
    "SimulatedAdapter",
    "StreamEnd",
    "StreamEvent",
    "TextDelta",
    "Timeout",
    "build_adapter",
    "estimate_tokens",
]
