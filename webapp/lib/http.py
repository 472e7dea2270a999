"""Who a request comes from, and how many of a person's slow requests a web process
serves at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.http import HttpRequest
from ipware import get_client_ip


def client_ip(request: HttpRequest) -> str:
    """The client's address, as the site's trusted proxies saw it.

    ``GAD_TRUSTED_PROXIES`` is the number of reverse proxies in front of the site, each
    appending the address it received from to ``X-Forwarded-For``. With none (the
    default) the header is the client's own say and is ignored: the address is the
    connection's. With N, it is the address the outermost of them saw; a request that
    did not come through them (a shorter header) is the connection's again.

    The one answer for every use: sign-in lockouts (django-axes), the API token limiter
    and ``/metrics``' loopback rule.
    """
    remote = str(request.META.get("REMOTE_ADDR", ""))
    proxies = settings.GAD_TRUSTED_PROXIES
    if proxies == 0:
        return remote
    # ipware counts the proxies named in the header, the nearest one (the connection)
    # not among them: N trusted proxies append N addresses, the client's first.
    found, _ = get_client_ip(
        request,
        proxy_count=proxies - 1,
        request_header_order=["HTTP_X_FORWARDED_FOR"],
        strict=False,
    )
    return found or remote


class TooMany(Exception):
    """A person already has as many slow requests running as a web process allows."""


class Slots:
    """At most ``per_key`` holders per key (a person) and ``total`` in all, in this web
    process: a few of its threads for waits and long streams, the rest for everyone
    else. Limits are read at each ``take`` (settings may change)."""

    def __init__(self, what: str, limits: Callable[[], tuple[int, int]]):
        self.what = what
        self.limits = limits
        self._lock = threading.Lock()
        self._held: dict[object, int] = {}

    def take(self, key: object) -> Callable[[], None]:
        """A slot for ``key``, and the function that gives it back (once); raises
        TooMany when none is free."""
        per_key, total = self.limits()
        with self._lock:
            if self._held.get(key, 0) >= per_key:
                raise TooMany(
                    f"You have {per_key} {self.what} running already; wait for one to end."
                )
            if sum(self._held.values()) >= total:
                raise TooMany(f"The site is serving {total} {self.what} already; try again soon.")
            self._held[key] = self._held.get(key, 0) + 1
        given = [False]

        def give_back() -> None:
            with self._lock:
                if not given[0]:
                    given[0] = True
                    self._held[key] -= 1
                    if not self._held[key]:
                        del self._held[key]

        return give_back

    def clear(self) -> None:
        """Forget every holder: a web server closes every response it streams, which
        gives its slot back; a test's client does not close the ones it leaves unread."""
        with self._lock:
            self._held.clear()

    @contextmanager
    def held(self, key: object) -> Iterator[bool]:
        """A slot for the block if one is free (True), else the block runs without
        one (False)."""
        try:
            give_back = self.take(key)
        except TooMany:
            yield False
            return
        try:
            yield True
        finally:
            give_back()

    def streaming(self, key: object, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """``chunks`` streamed under a slot, given back when the stream ends or the
        response is closed (the client went away); raises TooMany before the first byte
        when none is free."""
        give_back = self.take(key)

        def stream() -> Iterator[bytes]:
            try:
                yield from chunks
            finally:
                give_back()

        return stream()


UPLOAD_WAITS = Slots(
    "uploads waiting for their import",
    lambda: (settings.GAD_UPLOAD_WAITERS_PER_USER, settings.GAD_UPLOAD_WAITERS),
)
DOWNLOADS = Slots(
    "downloads",
    lambda: (settings.GAD_DOWNLOADS_PER_USER, settings.GAD_DOWNLOADS),
)
