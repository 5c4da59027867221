"""The gateway: OpenAI Chat Completions and Anthropic Messages in, every call kept as a chat.

schemas   the request body, validated at the edge (400s name the field)
convert   body -> provider request, and -> stored messages
chunks    typed events -> `chat.completion.chunk` payloads / `chat.completion` body
errors    OpenAI's error shape and which failure gets which status
keep      where a call's messages go (new chat or continued), and its generation
respond   streaming / whole responses from a generation or a pure relay
routes    `POST /v1/chat/completions`, `GET /v1/models` (`server.app` mounts its router)

Anthropic's Messages API on the same machinery (`keep`, `respond`):
messages_schema   the `POST /v1/messages` body
messages_convert  body -> provider request, and -> the Chat Completions shape `keep` stores
messages_stream   typed events -> Anthropic's named SSE events / `message` body
messages          `POST /v1/messages`
"""
