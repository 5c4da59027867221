"""The tool loop against a real OpenAI-compatible server: llama-cpp-python's own, with
its function-calling chat format (`chatml-function-calling`), on the SmolLM2 file the
embedded model uses.

That server streams a tool call only when `tool_choice` names the function ("automatic
streaming tool choice is not supported"), and SmolLM2-135M writes poor arguments; so
this checks the plumbing, not the model: the server's call is assembled as one call
(it sends every fragment twice, as `function_call` and `tool_calls`), the loop answers
it, and the server takes the next request, whose history carries the call and its
result (it refuses an assistant `content` of null)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamkeep.generation.steps import MAX_STEPS, ToolOutput
from streamkeep.generation.toolloop import tool_loop
from streamkeep.llm import ChatRequest, Message, StreamError
from streamkeep.llm.events import Finish, ToolCallStart
from streamkeep.llm.openai import OpenAIProvider
from streamkeep.tools.builtin import builtin_tools
from tests.llm.llama_server import llama_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def function_calling_server(
    smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    log_dir = tmp_path_factory.mktemp("llama-tools")
    with llama_server(smollm2_path, log_dir, "--chat_format", "chatml-function-calling") as url:
        yield url


async def test_the_loop_runs_a_real_servers_calls_and_sends_their_results_back(
    function_calling_server: str,
) -> None:
    provider = OpenAIProvider("llamacpp", function_calling_server)
    calculator = [t for t in builtin_tools() if t.name == "calculator"]
    request = ChatRequest(
        model="smollm2",
        messages=[Message("user", "6*7")],
        tool_choice={"type": "function", "function": {"name": "calculator"}},
        temperature=0,
        seed=7,
        max_tokens=60,
    )
    try:
        loop = tool_loop(provider.stream, request, calculator, max_steps=2, tool_timeout=10)
        seen = [event async for event in loop]
    finally:
        await provider.aclose()
    assert not [e for e in seen if isinstance(e, StreamError)], seen
    starts = [e for e in seen if isinstance(e, ToolCallStart)]
    outputs = [e for e in seen if isinstance(e, ToolOutput)]
    # One call per model call (two steps: the second request carried the first's
    # call and result, and the server took it), each answered.
    assert [s.name for s in starts] == ["calculator", "calculator"]
    assert [o.call_id for o in outputs] == [s.call_id for s in starts]
    assert all(o.output is not None or o.error for o in outputs)
    finish = seen[-1]
    assert isinstance(finish, Finish) and finish.raw_reason == MAX_STEPS
