"""Which address a request came from, also when the collector sits behind reverse proxies.

Failed authentication is limited per address and sign-ins are audited with it. Behind nginx every
request arrives from the proxy, so one guesser would slow down everyone's failures and the audit
would name the proxy. `X-Forwarded-For` names the client, but anyone can send it: it is read only
when the peer is a proxy listed in `trusted_proxies`, and only as far back as that chain of
trusted proxies goes. Each trusted proxy appends the address it saw; the right-most entry that is
not a trusted proxy is the client, and whatever stands left of it is the client's own say-so.

`X-Forwarded-Proto` is read the same way: it decides whether the pages set Secure cookies and
HSTS, so only a trusted proxy may say that the client spoke HTTPS to it.
"""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

from collector.settings import Network, parse_networks

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return address


def _trusted(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def client_address(request: web.Request, networks: tuple[Network, ...]) -> str:
    """The client's address: the peer's, or, from a proxy in `networks`, the one it forwarded
    for."""
    peer_text = request.remote or "unknown"
    peer = _address(peer_text)
    if not networks or peer is None or not _trusted(peer, networks):
        return peer_text
    hops = [
        hop.strip()
        for header in request.headers.getall("X-Forwarded-For", [])
        for hop in header.split(",")
        if hop.strip()
    ]
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # not written by a proxy of ours: the last good hop is as far as we trust
        client = address
        if not _trusted(address, networks):
            break
    return str(client)


@functools.lru_cache(maxsize=8)
def trusted_networks(text: str) -> tuple[Network, ...]:
    """`trusted_proxies` as networks, parsed once per distinct setting (it was validated at
    start-up)."""
    return parse_networks(text)


def forwarded_https(request: web.Request, networks: tuple[Network, ...]) -> bool:
    """True when the peer is a proxy in `networks` and says the client reached it over HTTPS;
    from anyone else `X-Forwarded-Proto` means nothing."""
    peer = _address(request.remote or "")
    if peer is None or not _trusted(peer, networks):
        return False
    # The proxy nearest the client writes the first entry; it is the scheme the browser used.
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return proto == "https"
