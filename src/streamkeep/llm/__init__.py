"""streamkeep.llm: stream from OpenAI-compatible providers, Anthropic and a local model.

    from streamkeep.config import load_settings
    from streamkeep.llm import ChatRequest, Message
    from streamkeep.llm.registry import ModelRegistry

    registry = ModelRegistry(load_settings())
    try:
        request = ChatRequest(messages=[Message("user", "Hi")])
        async for event in registry.stream("local/smollm2", request):
            ...
    finally:
        await registry.aclose()

The README's "Use the library" section has a complete script.
"""

from streamkeep.llm.accumulator import Accumulator
from streamkeep.llm.errors import (
    ConfigurationError,
    LLMError,
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderIncomplete,
    ProviderStreamError,
    ProviderTimeout,
    UnknownModelError,
)
from streamkeep.llm.events import (
    EventStream,
    Finish,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    Routed,
    Skipped,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from streamkeep.llm.provider import Provider, complete
from streamkeep.llm.types import (
    ChatRequest,
    Completion,
    FinishReason,
    Message,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolCallPart,
    ToolSpec,
    Usage,
)

__all__ = [
    "Accumulator",
    "ChatRequest",
    "Completion",
    "ConfigurationError",
    "EventStream",
    "Finish",
    "FinishReason",
    "LLMError",
    "Message",
    "Provider",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderIncomplete",
    "ProviderStreamError",
    "ProviderTimeout",
    "ReasoningDelta",
    "ReasoningPart",
    "ReasoningSignature",
    "RedactedReasoning",
    "Routed",
    "Skipped",
    "StreamError",
    "StreamEvent",
    "TextDelta",
    "TextPart",
    "ToolCall",
    "ToolCallComplete",
    "ToolCallDelta",
    "ToolCallPart",
    "ToolCallStart",
    "ToolSpec",
    "UnknownModelError",
    "Usage",
    "UsageReport",
    "complete",
]
