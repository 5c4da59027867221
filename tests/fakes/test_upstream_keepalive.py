"""The fake keeps every byte of a reused connection: a request sent while (or just as)
the previous answer ends is answered, not read from its second byte on (which a proxy
reusing upstream connections, as nginx does, got back as a 404)."""

from __future__ import annotations

import asyncio

import orjson

from tests.fakes.upstream import FakeUpstream


def request(tokens: int) -> bytes:
    body = orjson.dumps(
        {
            "model": "fake-model",
            "stream": True,
            "messages": [{"role": "user", "content": f"[[tokens={tokens}]] hi"}],
        }
    )
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Content-Type: application/json\r\n\r\n" + body


async def test_pipelined_requests_on_one_connection_are_each_answered(
    fake_upstream: FakeUpstream,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", fake_upstream.port)
    try:
        # The second request is on the wire before the first answer ends: the fake's
        # close watch reads its first byte.
        writer.write(request(3) + request(2))
        await writer.drain()
        answers = b""
        async with asyncio.timeout(10):
            while answers.count(b"data: [DONE]") < 2:
                data = await reader.read(65536)
                assert data, f"connection closed after {answers!r}"
                answers += data
    finally:
        writer.close()
    assert answers.count(b"HTTP/1.1 200 OK") == 2, answers
    assert b"404" not in answers
    assert fake_upstream.connections == 1
