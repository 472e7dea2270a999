"""Keep teacher URLs from reaching into the site's own network (SSRF).

A base URL is accepted when its scheme is http(s) and every address its host resolves
to is public, or when the host is listed in ``settings.GAD_ALLOWED_TEACHER_HOSTS``
(development lists loopback so that a local ``transformers serve`` works). The check
runs when an endpoint is saved and again in the worker right before it connects,
because DNS answers can change in between; the worker then connects to the very
address it checked (``resolve_base_url``, ``trainer.teacher.PinnedTransport``), so a
name that resolves to a public address for the check and to an internal one a moment
later (DNS rebinding) still reaches only the checked one.

"Public" is stricter than Python's ``is_global``, which lets through IPv6 forms that
reach IPv4 or internal hosts: NAT64, 6to4, IPv4-mapped and IPv4-compatible addresses,
and the old site-local range are refused outright.
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


# IPv6 ranges that carry or reach IPv4 (and so the site's private IPv4 network), or are
# internal, but that ``is_global`` may call global.
NOT_PUBLIC_V6 = [
    ipaddress.IPv6Network(net)
    for net in (
        "64:ff9b::/96",  # NAT64, well-known prefix
        "64:ff9b:1::/48",  # NAT64, local use
        "2002::/16",  # 6to4
        "2001::/32",  # Teredo
        "::ffff:0:0/96",  # IPv4-mapped
        "::/96",  # IPv4-compatible (deprecated)
        "fec0::/10",  # site-local (deprecated)
    )
]


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in NOT_PUBLIC_V6):
        return False
    return ip.is_global and not ip.is_multicast


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL (default port filled in): where a key may go."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = 0
    return f"{scheme}://{_normal(parts.hostname or '')}:{port}"


def check_base_url(url: str, field: str = FIELD) -> str:
    """Return the URL (stripped) if it may be used; raise ``UnsafeURL`` otherwise."""
    return resolve_base_url(url, field)[0]


def resolve_base_url(url: str, field: str = FIELD) -> tuple[str, str]:
    """(the URL stripped, the checked address to connect to) if the URL may be used;
    raise ``UnsafeURL`` otherwise. The address is "" for a host the site allows by name
    (GAD_ALLOWED_TEACHER_HOSTS): it is resolved as usual."""
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
        return url, ""
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
    addresses = []
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
        addresses.append(address)
    return url, addresses[0]
