"""A small threaded TCP proxy in front of PostgreSQL, to fail the database on purpose.

The fault tests point a server process (gunicorn) at the proxy instead of at PostgreSQL, then
``cut()`` it: every open connection is closed under the server, as when PostgreSQL restarts,
and every new one is reset at once (a server that is down) or, with ``hang=True``, accepted and
never answered (a host that went away: only the client's connect timeout ends the wait).
``restore()`` forwards again. It stands in for "PostgreSQL restarted" without restarting the
PostgreSQL server that the other tests, and other sessions, share.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType


def _reset(sock: socket.socket) -> None:
    """Close with an RST (linger 0) instead of an orderly FIN; never raises."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _close(sock: socket.socket) -> None:
    """Shut down (waking a thread blocked reading it), then close; never raises."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class TcpProxy:
    """Listens on a free port of 127.0.0.1 and forwards each connection to ``target``."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()  # both ends of every forwarded connection
        self._held: set[socket.socket] = set()  # accepted while cut with hang=True
        self._mode = "forward"  # or "reset", "hang"
        self._closed = False
        self.accepted = 0
        self.refused = 0
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    # --- faults ---------------------------------------------------------------------------

    def cut(self, *, hang: bool = False) -> None:
        """Close every open connection; reset new ones (``hang``: accept and never answer)."""
        with self._lock:
            self._mode = "hang" if hang else "reset"
            dropped, self._open = self._open, set()
        for sock in dropped:
            _close(sock)

    def restore(self) -> None:
        """Forward new connections again (connections held while hanging are closed)."""
        with self._lock:
            self._mode = "forward"
            held, self._held = self._held, set()
        for sock in held:
            _close(sock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = self._open | self._held
            self._open, self._held = set(), set()
        _close(self._listener)
        for sock in sockets:
            _close(sock)
        self._acceptor.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- forwarding -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was closed
                return
            with self._lock:
                mode = "closed" if self._closed else self._mode
                if mode == "hang":
                    self._held.add(client)
            if mode == "hang":
                continue
            if mode != "forward":
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                self.refused += 1
                _reset(client)
                continue
            with self._lock:
                if self._mode != "forward" or self._closed:  # cut while connecting upstream
                    _reset(client)
                    _close(upstream)
                    continue
                self._open |= {client, upstream}
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy one direction until either end closes; then close both."""
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._open -= {source, sink}
        _close(source)
        _close(sink)
