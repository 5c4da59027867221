"""The OpenAI-compatible gateway: Chat Completions in, every call kept as a chat.

schemas   the request body, validated at the edge (400s name the field)
convert   body -> provider request, and -> stored messages
chunks    typed events -> `chat.completion.chunk` payloads / `chat.completion` body
errors    OpenAI's error shape and which failure gets which status
keep      where a call's messages go (new chat or continued), and its generation
respond   streaming / whole responses from a generation or a pure relay
routes    `POST /v1/chat/completions`, `GET /v1/models` (`server.app` mounts its router)
"""
