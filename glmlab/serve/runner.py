"""Running the app: `serve` in the foreground (the CLI), `start` in a background thread (notebooks,
the demo, tests), both on uvicorn.

    server = glmlab.serve.start(vlm)          # an already loaded VLM, any free loopback port
    client = glmlab.Client(server.url)
    server.stop()
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import uvicorn

from glmlab.errors import ConfigError, ModelLoadError
from glmlab.serve.app import create_app
from glmlab.serve.settings import ServerSettings


def serve(settings: ServerSettings, *, log_level: str = "info") -> None:
    """Run the server until interrupted. The model loads in the background; /health says when it is ready."""
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        **settings.uvicorn_tls(),
    )


class ServerThread:
    """A uvicorn server in a daemon thread; `url` is its OpenAI base URL (ending in /v1).

    tls: uvicorn's ssl_certfile and ssl_keyfile (`ServerSettings.uvicorn_tls`): then `url` is https.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        tls: dict[str, str] | None = None,
    ) -> None:
        self.app = app
        self.scheme = "https" if tls else "http"
        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2, **(tls or {})
        )
        self.server = uvicorn.Server(config)
        self.host = host
        self.port = port
        self._thread = threading.Thread(target=self.server.run, daemon=True, name="glmlab-serve")

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the server did not start on {self.host}:{self.port} (port in use?).")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/v1"

    def wait_ready(self, timeout_s: float = 600.0) -> ServerThread:
        """Block until the model has loaded (or failed to: then raise its error)."""
        host = self.app.state.host
        if not host.ready.wait(timeout_s):
            raise ConfigError(f"the model did not load within {timeout_s:.0f} s.")
        if host.load_error is not None:
            raise ModelLoadError(f"the server's model failed to load: {host.load_error}")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start(
    source: ServerSettings | Any,
    settings: ServerSettings | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    wait: bool = True,
) -> ServerThread:
    """Serve `source` (ServerSettings or a loaded VLM) from a background thread; returns the running server.

    host, port: default the given settings' (port 0, a free one, when none were given); a host
    given here is checked like `ServerSettings.host` (beyond loopback it needs an API key).
    wait=True returns once the model is loaded and the server answers (a failed load stops it again).
    """
    given = settings or (source if isinstance(source, ServerSettings) else None)
    if host is not None:
        given = replace(given or ServerSettings(model=source.name), host=host)
        source, settings = (given, None) if isinstance(source, ServerSettings) else (source, given)
    app = create_app(source, settings)
    used = app.state.host.settings
    chosen_port = port if port is not None else (given.port if given else 0)
    server = ServerThread(app, used.host, chosen_port, tls=used.uvicorn_tls()).start()
    if not wait:
        return server
    try:
        return server.wait_ready()
    except BaseException:
        server.stop()
        raise
