"""`streamkeep chat --local`: the same server, in this process, on a private port.

Running the real app under uvicorn on a loopback port (rather than an in-process ASGI
transport) keeps one code path: the terminal talks HTTP and the same generation engine
stores the chat, exactly as with a separate server.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from streamkeep.config import Settings


class LocalServer:
    def __init__(self, settings: Settings) -> None:
        from streamkeep.server.app import create_app  # the server is only needed here

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="streamkeep-local")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalServer:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the in-process server failed to start")
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join()
