"""The thirteen systems of the book, and where each one stands.

``sdi up`` starts every system whose state is ``"running"``-capable (built);
the status page and ``sdi serve --help`` list them all.

>>> from sdi.systems import SYSTEMS, by_key
>>> len(SYSTEMS)
13
>>> by_key("exchange").chapter
13
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["built", "not built yet"]


@dataclass(frozen=True)
class System:
    """One system of the book: its CLI key, title, chapter, protocol and state."""

    key: str
    title: str
    chapter: int
    protocol: str
    core: str
    state: State = "not built yet"
    # The module that defines ``service() -> sdi.runtime.Service``, once built.
    service_module: str | None = None


SYSTEMS: tuple[System, ...] = (
    System(
        "proximity",
        "Proximity service",
        1,
        "HTTP JSON, Redis GEO over RESP",
        "geo",
        state="built",
        service_module="sdi.proximity.service",
    ),
    System("nearby", "Nearby friends", 2, "WebSocket, Redis pub/sub", "fan-out router"),
    System("maps", "Maps and navigation", 3, "HTTP tiles, OSRM-shaped routes", "route"),
    System(
        "mq",
        "Message queue",
        4,
        "Kafka protocol",
        "log",
        state="built",
        service_module="sdi.mq.service",
    ),
    System("metrics", "Metrics monitoring and alerting", 5, "Prometheus, PromQL", "tsdb"),
    System("adclick", "Ad click aggregation", 6, "Kafka in, HTTP query API", "stream"),
    System("hotel", "Hotel reservation", 7, "HTTP JSON with idempotency keys", "SQL"),
    System(
        "email",
        "Email service",
        8,
        "SMTP, HTTP JSON, WebSocket",
        "lsm",
        state="built",
        service_module="sdi.email.service",
    ),
    System(
        "s3",
        "S3-like object storage",
        9,
        "S3 HTTP API with SigV4",
        "ec",
        state="built",
        service_module="sdi.objstore.service",
    ),
    System(
        "leaderboard",
        "Gaming leaderboard",
        10,
        "HTTP JSON, Redis sorted sets over RESP",
        "zset",
        state="built",
        service_module="sdi.leaderboard.service",
    ),
    System("payments", "Payment system", 11, "HTTP JSON with idempotency keys", "ledger"),
    System("wallet", "Digital wallet", 12, "HTTP JSON, batch binary API", "ledger"),
    System(
        "exchange",
        "Stock exchange",
        13,
        "FIX 4.4, market data over UDP multicast and WebSocket",
        "exchange, ring",
        state="built",
        service_module="sdi.exchange.service",
    ),
)


def by_key(key: str) -> System:
    """The system named ``key``; raises ``InvalidArgument`` listing the valid keys."""
    for system in SYSTEMS:
        if system.key == key:
            return system
    from sdi.errors import InvalidArgument

    keys = ", ".join(system.key for system in SYSTEMS)
    raise InvalidArgument(f"no system called {key!r}; the systems are: {keys}")
