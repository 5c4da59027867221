"""Usage: every reply keeps the API key it was asked with, and `GET /api/usage` sums
the stored replies per user, model, day and key, for whom the caller may see.

Real uvicorn, real SQLite and PostgreSQL (the `server` fixture), the fake upstream,
whose usage reports are exact: input tokens are the words of the prompt, output tokens
the chunks sent (see tests/fakes/upstream.py).
"""

from __future__ import annotations

from tests.server.conftest import Server
from tests.server.team import chat_reply, gateway_reply, signed_in, streamed, team


async def test_each_reply_keeps_the_key_it_was_asked_with(server: Server) -> None:
    async with team(server, {"alice": 2, "bob": 1}) as members:
        alice, bob = members["alice"], members["bob"]
        a1, a2 = alice.keys
        kept: dict[str, str | None] = {}  # reply id -> the key it must have

        first = await chat_reply(a1.client, "hello")
        kept[first.message_id] = a1.id
        prompt = (await server.store.get_message(first.message_id)).parent_id
        assert prompt is not None
        again = await streamed(a2.client, f"/api/messages/{first.message_id}/regenerate", {})
        kept[again.message_id] = a2.id
        edited = await streamed(a2.client, f"/api/messages/{prompt}/edit", {"content": "hey"})
        kept[edited.message_id] = a2.id

        ui = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
        use = await streamed(a1.client, "/api/chat", {"id": "chat-ui", "messages": [ui]})
        kept[use.message_id] = a1.id
        body = {"id": "chat-ui", "messages": [], "trigger": "regenerate-message"}
        kept[(await streamed(a2.client, "/api/chat", body)).message_id] = a2.id

        called = await gateway_reply(a2.client, "hi")
        kept[called.message_id] = a2.id
        continued = await gateway_reply(a1.client, "more", chat_id=called.chat_id, stream=True)
        kept[continued.message_id] = a1.id

        kept[(await chat_reply(bob.client, "hi")).message_id] = bob.keys[0].id
        async with signed_in(server, "alice") as page:  # the page's session: no key
            kept[(await chat_reply(page, "hi")).message_id] = None

        for message_id, key_id in kept.items():
            message = await server.store.get_message(message_id)
            assert (message.role, message.api_key_id) == ("assistant", key_id), message_id
            if message.parent_id is not None:  # the prompt is the user's, not the key's
                assert (await server.store.get_message(message.parent_id)).api_key_id is None
