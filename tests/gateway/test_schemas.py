"""Request bodies: what is accepted, and how a bad one names its field."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streamkeep.gateway.errors import GatewayError
from streamkeep.gateway.schemas import parse_body


def body(**fields: Any) -> bytes:
    base: dict[str, Any] = {"model": "openai/m", "messages": [{"role": "user", "content": "hi"}]}
    base.update(fields)
    return orjson.dumps(base)


def rejected(raw: bytes) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse_body(raw)
    assert info.value.status == 400
    assert info.value.body()["error"]["type"] == "invalid_request_error"
    return info.value


def test_full_body_is_accepted_and_unknown_fields_kept_to_pass_through() -> None:
    parsed = parse_body(
        body(
            messages=[
                {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ],
            stream=True,
            stream_options={"include_usage": True},
            n=1,
            stop="END",
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            tool_choice={"type": "function", "function": {"name": "f"}},
            max_completion_tokens=5,
            temperature=0.5,
            seed=3,
            user="u",
            logprobs=False,
            frequency_penalty=0.1,
            metadata={"x": "y"},
        )
    )
    assert parsed.messages[1].content == "a\nb"
    assert parsed.stop == ["END"]
    assert parsed.include_usage is True
    assert parsed.messages[2].tool_calls is not None
    assert parsed.passthrough == {
        "logprobs": False,
        "frequency_penalty": 0.1,
        "metadata": {"x": "y"},
    }


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"model": None}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "text": "x"}]}]},
            "messages[0].content",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "assistant"}]}, "messages[0].content"),
        ({"temperature": 5}, "temperature"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"stream": "yes please"}, "stream"),
    ],
)
def test_bad_fields_are_named(fields: dict[str, Any], param: str) -> None:
    error = rejected(body(**fields))
    assert error.param == param
    assert param in error.message


def test_missing_model_says_missing() -> None:
    error = rejected(orjson.dumps({"messages": [{"role": "user", "content": "x"}]}))
    assert error.message == "Missing required parameter: 'model'."


def test_not_json_and_not_an_object() -> None:
    assert "not valid JSON" in rejected(b"{nope").message
    assert "JSON object" in rejected(b"[1, 2]").message
