"""What both HTTP faces of streamkeep stand on: the chat API (`streamkeep.server`) and the
OpenAI-compatible gateway (`streamkeep.gateway`).

    responses   `SSEResponse`: pre-encoded frames out, client disconnects in, keep-alive
    metrics     the app's Prometheus metrics, and what a relay counts on them
    deps        FastAPI dependencies: how a route reaches the app's parts

Both faces import from here, and neither imports the other; `server.app` mounts the
gateway's router next to its own.
"""
