"""Keep teacher URLs from reaching into the site's own network (SSRF).

A base URL is accepted when its scheme is http(s) and every address its host resolves
to is public, or when the host is listed in ``settings.GAD_ALLOWED_TEACHER_HOSTS``
(development lists loopback so that a local ``transformers serve`` works). The check
runs when an endpoint is saved and again in the worker right before it connects,
because DNS answers can change in between.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

FIELD = "base_url"
DEFAULT_PORTS = {"http": 80, "https": 443}


class UnsafeURL(ValueError):
    """A base URL that may not be used; the message names the field and the next step."""

    def __init__(self, message: str, field: str = FIELD):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def _allowed_hosts() -> set[str]:
    return {_normal(h) for h in settings.GAD_ALLOWED_TEACHER_HOSTS}


def _normal(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.5 is 10.0.0.5 on the wire
    return ip.is_global and not ip.is_multicast


def check_base_url(url: str, field: str = FIELD) -> str:
    """Return the URL (stripped) if it may be used; raise ``UnsafeURL`` otherwise."""
    url = url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        shown = f"{scheme!r}" if scheme else "no scheme"
        raise UnsafeURL(
            f"{shown} is not allowed; use an http:// or https:// URL such as "
            "https://api.openai.com/v1",
            field,
        )
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL(
            "credentials in the URL are not allowed; put the key in the API key field", field
        )
    host = _normal(parts.hostname or "")
    if not host:
        raise UnsafeURL(f"no host in {url!r}; write e.g. https://api.openai.com/v1", field)
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise UnsafeURL(f"the port in {url!r} is not a number from 0 to 65535", field) from None
    if host in _allowed_hosts():
        return url
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURL(
            f"host {host} does not resolve ({exc}); check the spelling, or that the site's "
            "DNS knows it",
            field,
        ) from None
    if not infos:
        raise UnsafeURL(f"host {host} does not resolve to any address", field)
    for info in infos:
        # IPv6 link-local answers carry a zone ("fe80::1%eth0"); the zone is not part of it.
        address = str(info[4][0]).split("%", 1)[0]
        ip = ipaddress.ip_address(address)
        if not _is_public(ip):
            shown = host if address == host else f"{host} ({address})"
            raise UnsafeURL(
                f"host {shown} resolves to a private address; ask an administrator to add it "
                "to GAD_ALLOWED_TEACHER_HOSTS",
                field,
            )
    return url
