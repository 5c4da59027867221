"""Schemathesis fuzzes every operation of the server's own OpenAPI schema.

The server is real: `streamkeep serve`'s uvicorn on a loopback port (over real HTTP, as
the team's tests are, and so that streams go through `SSEResponse` as in production), a
real SQLite file, and the fake upstream as its provider, so a stream-starting request
answers at once. Both run on an event loop of their own in a thread, because
Schemathesis calls the API synchronously (requests) from the test. The schema is the
one the app itself generates (`create_app(...).openapi()`, the document `/openapi.json`
serves), loaded at import so that each operation is a test of its own.

No response may be a 5xx, or differ from what the schema declares (status code, content
type, headers, body schema, each SSE event), nor accept data the schema forbids, answer
an undeclared method without a right 405, or find a created chat missing or a deleted
one still there. Examples are bounded and derandomized: the run takes under a minute on
two cores (26 s when measured) and finds the same thing every time.
"""

from __future__ import annotations

import asyncio
import copy
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import ensure_resource_availability

from streamkeep.cli.serve import build_server
from streamkeep.server import create_app
from tests.fakes.upstream import FakeUpstream
from tests.server.conftest import MODEL, make_settings

pytestmark = pytest.mark.slow

# The schema does not depend on where the provider is.
SPEC = create_app(make_settings(Path("unused"), "http://127.0.0.1:9/v1")).openapi()
# Every check Schemathesis has, but one, and one made to know the API's 404s (below).
# `positive_data_acceptance` wants each value the schema allows accepted, and some cannot
# be said in a schema (an opaque page cursor the server issued, content within a
# setting's length). Given here, not found in a file.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {"enabled": False},
            "ensure_resource_availability": {"enabled": False},
        }
    }
)
# A copy: the loader writes the links it infers into the document.
schema = schemathesis.openapi.from_dict(copy.deepcopy(SPEC), config=CONFIG)


@schemathesis.check
def resource_availability(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """`ensure_resource_availability` (a chat just created must be found), knowing that
    a 404 may also name an unknown model (`unknown_model`, as the contract says)."""
    try:
        kind = response.json()["error"]["type"]
    except (ValueError, KeyError, TypeError):
        kind = None
    if response.status_code == 404 and kind == "unknown_model":
        return None
    result: bool | None = ensure_resource_availability(ctx, response, case)
    return result


FUZZ = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


class _Running:
    """The fake upstream and the server on an event loop in a thread of their own."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = ""
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)

    def __enter__(self) -> _Running:
        self._thread.start()
        self._started.wait(timeout=60)
        if self._error is not None:
            raise self._error
        assert self.url, "the server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with FakeUpstream() as upstream:
            settings = make_settings(
                self.data_dir,
                upstream.base_url,
                database_url=f"sqlite:///{self.data_dir / 'streamkeep.db'}",
            )
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.bind(("127.0.0.1", 0))
            server = build_server(settings, log_level="warning")
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the server exited during start-up")
                await asyncio.sleep(0.01)
            self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            self._started.set()
            await self._stop.wait()
            server.should_exit = True
            await task


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:  # none of the developer's own settings
        for key in [k for k in os.environ if k.startswith(("STREAMKEEP_", "OPENAI_"))]:
            mp.delenv(key)
        with _Running(tmp_path_factory.mktemp("fuzz")) as running:
            yield running.url


@schema.parametrize()
@FUZZ
def test_every_operation(case: Any, server_url: str) -> None:
    case.call_and_validate(base_url=server_url, timeout=30)


def test_operation_chains(server_url: str) -> None:
    """Stateful: operations fed with what earlier ones returned (a chat's id from its
    creation, a message's from its chat), so the fuzzing reaches real chats and replies."""

    class Chains(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # Each scenario starts with no chats: what it lists and links to is its own,
            # so Hypothesis sees the same choices when it replays a scenario.
            with httpx.Client(base_url=server_url, timeout=30) as client:
                while items := client.get("/api/chats", params={"limit": 200}).json()["items"]:
                    for chat in items:
                        client.delete(f"/api/chats/{chat['id']}").raise_for_status()

        def before_call(self, case: Any) -> None:
            # `model` and `parent_id` are fuzzed operation by operation above; here a
            # valid request has a known model and replies under the chat's active leaf,
            # so chains go on past a chat's creation into its replies and their versions.
            if case.meta.generation.mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
                case.body.update(
                    {k: v for k, v in (("model", MODEL), ("parent_id", None)) if k in case.body}
                )

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": server_url, "timeout": 30}

    Chains.run(settings=settings(FUZZ, max_examples=60, stateful_step_count=8))


def test_the_fuzzed_schema_is_the_served_one(server_url: str) -> None:
    assert httpx.get(f"{server_url}/openapi.json").json() == SPEC
