"""Run the server on a free loopback port in a background thread (notebooks, tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time


class ServerThread:
    """``with ServerThread(app) as server: OpenAI(base_url=server.base_url, ...)``; stops on exit."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None, start_timeout_s: float = 30.0):
        import uvicorn

        if port is None:
            with socket.socket() as probe:
                probe.bind((host, 0))
                port = probe.getsockname()[1]
        self.host, self.port, self.start_timeout_s = host, port, start_timeout_s
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="lmforge-serve")

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the server did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
