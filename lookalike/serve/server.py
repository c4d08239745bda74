"""The server: uvicorn on a socket bound first, so a taken port is one clear error and port 0 works.

``Server.run`` blocks and stops cleanly on Ctrl-C (uvicorn finishes the requests in
flight). ``BackgroundServer`` runs the same in a thread, for tests, benchmarks and notebooks.
An app with a ``listening_on`` method (the guard ``create_app`` returns) is told the address
the socket is bound to: what a host name resolved to, not how it was spelled.
"""

from __future__ import annotations

import socket
import threading
import time

from ..errors import ServeError

LOOPBACK = "127.0.0.1"


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (port 0: a free one).

    Raises:
        ServeError: the host is unknown, or the port is taken or not allowed.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ServeError(f"unknown host {host!r} ({error.strerror}): use an address of this machine, e.g. 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)  # a browser opened at once waits in the backlog until uvicorn accepts
    except OSError as error:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({error.strerror}): choose another --port, "
                         f"or stop what is using it") from None
    sock.set_inheritable(True)
    return sock


def address_of(sock: socket.socket) -> str:
    """The IP address a socket is bound to, e.g. ``127.0.0.1``, ``::1`` or ``0.0.0.0``."""
    return sock.getsockname()[0]


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class Server:
    """An ASGI app served by uvicorn on a bound socket.

    Args:
        app: the ASGI app (``create_app``).
        host, port: where to listen; port 0 picks a free one.
        log_level: uvicorn's; "warning" keeps the terminal to the URL and errors.
    """

    def __init__(self, app, host: str = LOOPBACK, port: int = 8765, log_level: str = "warning"):
        import uvicorn

        self.socket = bind(host, port)
        self.url = url_of(self.socket)
        self.address = address_of(self.socket)
        if callable(getattr(app, "listening_on", None)):
            app.listening_on(self.address)
        config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5, server_header=False)
        self._uvicorn = uvicorn.Server(config)

    @property
    def started(self) -> bool:
        return self._uvicorn.started

    def run(self) -> None:
        """Serve until Ctrl-C (SIGINT) or SIGTERM, or ``stop``; in the main thread it then re-raises the signal."""
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def stop(self) -> None:
        self._uvicorn.should_exit = True


class BackgroundServer:
    """A ``Server`` in a thread, as a context manager: started on entry, stopped and joined on exit.

    Args:
        app: the ASGI app.
        host, port: default 127.0.0.1 and a free port.
        timeout: seconds to wait for the start and for the stop.
    """

    def __init__(self, app, host: str = LOOPBACK, port: int = 0, timeout: float = 60):
        self.app = app
        self.server = Server(app, host, port)
        self.url = self.server.url
        self.timeout = timeout
        self._thread = threading.Thread(target=self.server.run, name="lookalike-serve", daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.server.stop()
                raise ServeError(f"the server at {self.url} did not start within {self.timeout:.0f} s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()
        self._thread.join(self.timeout)
