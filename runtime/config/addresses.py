"""The one parser of network addresses in the config: `host`, `host:port`, `[v6]`, `[v6]:port`, a bare v6 host."""

from __future__ import annotations

NO_PORT = -1  # `port=NO_PORT`: the address must not carry one (a listen address before the last)


def host_port(text: str, port: int | None = None) -> tuple[str, int]:
    """(host, port) from `text`. `port` is the default when the text has none; None: the text must give one;
    NO_PORT: it must give none (the result's port is then 0). ValueError says what is wrong, without the key."""
    text = text.strip()
    if not text or any(c.isspace() or c in "/@," for c in text):  # a URL, a CIDR network, user@host, a list
        raise ValueError(f"{text!r} is not an address (host:port)")
    port_text: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not an address ([v6 address]:port)")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text  # a name, an IPv4 address, or an IPv6 one without brackets
        if ":" in text and port is None:
            raise ValueError(f"{text!r}: write an IPv6 address followed by a port as [address]:port")
    if not host or any(c in "[]" for c in host):
        raise ValueError(f"{text!r} is not an address (host:port)")
    if port == NO_PORT:
        if port_text is not None:
            raise ValueError(f"{text!r}: only the last address carries the port")
        return host, 0
    if port_text is None:
        if port is None:
            raise ValueError(f"{text!r} has no port (host:port)")
        return host, port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} in {text!r} is not a port number (1-65535)")
    return host, int(port_text)


def listen_list(text: str) -> tuple[tuple[str, ...], int]:
    """Postgres' `listen`: addresses separated by commas, the port after the last (`127.0.0.1,10.0.0.5:5432`)."""
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise ValueError(f"{text!r} has an empty address")
    hosts = tuple(host_port(item, NO_PORT)[0] for item in items[:-1])
    last_host, port = host_port(items[-1])
    return (*hosts, last_host), port
