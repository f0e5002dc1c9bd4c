"""Where a webhook may POST: server-side request forgery checks on a URL and on every address
its host resolves to.

A webhook URL is chosen by an admin but fetched by the worker, from inside the network: without
these checks it reaches the database, the model server or a cloud's metadata service. So:

- only ``http`` and ``https``, no credentials in the URL;
- the host is resolved once, here, by the system resolver, and *every* address it gives is
  checked; the request then connects to the checked address (``Target.address``), never
  resolving again, so a name that answers differently the second time (DNS rebinding) cannot
  slip through. The resolver also reads the old numeric forms (``2130706433``, ``0177.0.0.1``,
  ``0x7f.1``), so they are checked as the address they are, not as text;
- refused always: unspecified (``0.0.0.0``, ``::``), link-local (``169.254.0.0/16`` with the
  metadata service at ``169.254.169.254``, ``fe80::/10``), multicast, reserved, and the metadata
  addresses outside those ranges; refused unless ``WEBHOOK_ALLOW_PRIVATE_TARGETS``: loopback,
  private (``10/8``, ``172.16/12``, ``192.168/16``, ``fc00::/7``), shared (``100.64/10``) and
  anything else that is not globally routable;
- an IPv6 address that carries an IPv4 one (``::ffff:127.0.0.1``, NAT64 ``64:ff9b::/96``,
  6to4) is checked as that IPv4 address too;
- each redirect's ``Location`` goes through the same check before it is followed
  (sending.py); where private targets are allowed, they are the registered URL's host only: a
  redirect, the receiver's choice and not the admin's, may not lead to another private host.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from feedback.platform.errors import DomainError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services not inside the always-refused ranges (AWS over IPv6 sits in fd00::/8,
# Alibaba in the shared 100.64/10): refused even where private targets are allowed.
METADATA_ADDRESSES = {
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}
NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Target:
    """A checked URL: what to connect to (``address``), and the name TLS and Host must carry."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    path: str  # with the query string


def allow_private_targets() -> bool:
    return bool(getattr(settings, "WEBHOOK_ALLOW_PRIVATE_TARGETS", False))


def _refuse(why: str) -> DomainError:
    return DomainError(why, code="forbidden_target", fields={"url": [why]})


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why a webhook may not reach ``address`` (None: it may)."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:  # the IPv4 address it carries is the one reached
        why = address_refusal(embedded, allow_private=allow_private)
        return f"{why} (as {address})" if why else None
    if address in METADATA_ADDRESSES or address.is_link_local:
        return f"{address} is link-local or a cloud metadata address"
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return f"{address} is not a unicast host address"
    if address.is_global:
        return None
    if allow_private:
        return None
    kind = "loopback" if address.is_loopback else "private"
    return f"{address} is a {kind} address (WEBHOOK_ALLOW_PRIVATE_TARGETS is off)"


def url_parts(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path)`` of an http(s) URL, or a DomainError naming the problem."""
    if any(ch in url for ch in "\\\r\n\t ") or not url.isprintable():
        raise _refuse("The URL holds whitespace, control characters or backslashes.")
    if not url.isascii():
        raise _refuse("The URL must be ASCII: percent-encode the path, punycode the host.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refuse(f"Not a valid URL: {exc}.") from None
    if parts.scheme not in ("http", "https"):
        raise _refuse("Only http and https URLs can receive webhooks.")
    if parts.username is not None or parts.password is not None:
        raise _refuse("The URL must not hold credentials; the signature authenticates.")
    host = parts.hostname or ""
    if not host:
        raise _refuse("The URL has no host.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path


def target_check(url: str, *, allow_private: bool | None = None) -> Target:
    """Resolve ``url``'s host once and check every address; the Target to connect to, or a
    DomainError (field ``url``) saying why not."""
    allow = allow_private_targets() if allow_private is None else allow_private
    scheme, host, port, path = url_parts(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise _refuse(f"The host {host} does not resolve ({exc}).") from None
    addresses: list[IPAddress] = []
    for info in infos:
        # A scoped IPv6 address (fe80::1%eth0) comes back with its zone; the zone is not part
        # of the address to check.
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    for address in addresses:
        why = address_refusal(address, allow_private=allow)
        if why:
            raise _refuse(f"{host} is refused: {why}.")
    if not addresses:
        raise _refuse(f"The host {host} has no address.")
    return Target(
        url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]), path=path
    )
