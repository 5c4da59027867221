"""A Responses API background run across two workers, through the official `openai` SDK:
started on one, its client drops, and `retrieve(stream=True, starting_after=N)` on the
other gets exactly the events after N (through Redis); a cancel on the other worker
stops it where it runs and keeps the partial output.

Two real uvicorn servers on different loopback ports, one PostgreSQL database, real
Redis under the test's own key prefix, the fake upstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from streamkeep.scaleout import Keys
from tests.fakes.upstream import FakeUpstream, Script
from tests.fakes.upstream_wire import lorem
from tests.scaleout.test_accounts_workers import cluster
from tests.scaleout.waits import eventually
from tests.server.conftest import MODEL

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def client(url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


async def test_a_background_stream_resumes_on_the_other_worker_exactly(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str, keys: Keys
) -> None:
    async with cluster(tmp_path, fake_upstream, pg_url, keys) as (_, (a_url, b_url)):
        a, b = client(a_url), client(b_url)
        fake_upstream.enqueue(Script(tokens=40, delay=0.03))
        stream = await a.responses.create(model=MODEL, input="go", background=True, stream=True)
        seen: list[Any] = []
        async for event in stream:
            seen.append(event)
            if event.type == "response.output_text.delta" and len(seen) >= 10:
                break  # the client's connection to worker a drops mid-answer
        await stream.close()
        response_id, last = seen[0].response.id, seen[-1].sequence_number

        rest = [
            event
            async for event in await b.responses.retrieve(
                response_id, stream=True, starting_after=last
            )
        ]
        both = seen + rest
        assert [e.sequence_number for e in both] == list(range(len(both)))  # none lost or twice
        assert both[-1].type == "response.completed"
        text = "".join(e.delta for e in both if e.type == "response.output_text.delta")
        assert text == lorem(40)
        assert both[-1].response.output_text == lorem(40)

        whole = await b.responses.retrieve(response_id)
        assert whole.status == "completed" and whole.output_text == lorem(40)
        await a.close()
        await b.close()


async def test_a_cancel_on_the_other_worker_stops_the_run_and_keeps_the_partial(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str, keys: Keys
) -> None:
    async with cluster(tmp_path, fake_upstream, pg_url, keys) as (_, (a_url, b_url)):
        a, b = client(a_url), client(b_url)
        fake_upstream.enqueue(Script(tokens=2000, delay=0.02))
        created = await a.responses.create(model=MODEL, input="go", background=True)
        assert created.status == "queued"

        async def some_output() -> bool:  # checkpointed, read on the other worker
            return bool((await b.responses.retrieve(created.id)).output)

        await eventually(some_output, within=20)
        cancelled = await b.responses.cancel(created.id)
        assert cancelled.status == "cancelled"
        partial = cancelled.output_text
        assert partial and lorem(2000).startswith(partial) and partial != lorem(2000)
        assert (await a.responses.retrieve(created.id)).output_text == partial

        events = [e async for e in await b.responses.retrieve(created.id, stream=True)]
        assert events[-1].type == "response.incomplete"
        assert events[-1].response.status == "cancelled"  # type: ignore[union-attr]
        streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert streamed == partial
        await a.close()
        await b.close()
