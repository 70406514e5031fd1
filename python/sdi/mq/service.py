"""``sdi serve mq``: one Kafka-protocol broker on embedded defaults.

Point any Kafka client at it::

    sdi serve mq --port 9092 --data-dir /tmp/mq
    kcat -b 127.0.0.1:9092 -t demo -P <<< 'hello'
    kcat -b 127.0.0.1:9092 -t demo -C -e

A replicated cluster: every broker gets the same ``--peers`` list and its
own ``--broker-id`` and directory; each also uses its port + 1 and + 2 for
its etcd member, so space the brokers' ports at least 3 apart::

    PEERS=0@127.0.0.1:9092,1@127.0.0.1:9095,2@127.0.0.1:9098
    sdi serve mq --broker-id 0 --port 9092 --data-dir d0 --peers $PEERS
    sdi serve mq --broker-id 1 --port 9095 --data-dir d1 --peers $PEERS
    sdi serve mq --broker-id 2 --port 9098 --data-dir d2 --peers $PEERS

``__consumer_offsets`` is compacted in the background; the variables in
:data:`COMPACTION_ENVIRONMENT` (``SDI_MQ_OFFSETS_SEGMENT_BYTES``,
``SDI_MQ_OFFSETS_TOMBSTONE_RETENTION_MS``, ``SDI_MQ_COMPACTION_CHECK_INTERVAL_S``,
``SDI_MQ_COMPACTION_MIN_NEW_SEGMENTS``) tune it.
"""

from __future__ import annotations

import os
from typing import Any

from sdi.errors import InvalidArgument
from sdi.mq.broker import Broker, BrokerConfig
from sdi.mq.topics import TopicConfig
from sdi.runtime import Endpoint, Service, ServiceConfig
from sdi.runtime.text import is_decimal

__all__ = ["MqService", "service"]


class MqService(Service):
    """One broker: topics, consumer groups and idempotent producers over the Kafka protocol."""

    key = "mq"

    def __init__(
        self,
        *,
        node_id: int = 0,
        partitions: int = 1,
        fsync: str = "interval",
        advertised_host: str | None = None,
        peers: dict[int, tuple[str, int]] | None = None,
    ) -> None:
        if fsync not in ("every_batch", "interval", "never"):
            raise InvalidArgument(f"--fsync must be every_batch, interval or never, not {fsync!r}")
        self._node_id = node_id
        self._partitions = partitions
        self._fsync = fsync
        self._advertised_host = advertised_host
        self._peers = peers or {}
        self.broker: Broker | None = None

    async def start(self, config: ServiceConfig) -> list[Endpoint]:
        broker = Broker(
            BrokerConfig(
                data_dir=config.data_dir,
                host=config.host,
                port=config.port,
                node_id=self._node_id,
                advertised_host=self._advertised_host,
                num_partitions=self._partitions,
                topic_defaults=TopicConfig(fsync=self._fsync),  # type: ignore[arg-type]
                peers=self._peers,
                **_compaction_settings(),
            )
        )
        await broker.start()
        self.broker = broker
        address = f"{broker.advertised_host}:{broker.port}"
        return [
            Endpoint(
                "mq (Kafka protocol)",
                f"kafka://{address}",
                f"kcat -b {address} -t demo -P <<< hello; kcat -b {address} -t demo -C -e",
            )
        ]

    async def stop(self) -> None:
        if self.broker is not None:
            await self.broker.stop()
            self.broker = None


#: Environment variables that tune compaction of ``__consumer_offsets`` (tests use them
#: to make it run often): name -> (BrokerConfig field, type).
COMPACTION_ENVIRONMENT: dict[str, tuple[str, type]] = {
    "SDI_MQ_OFFSETS_SEGMENT_BYTES": ("offsets_segment_bytes", int),
    "SDI_MQ_OFFSETS_TOMBSTONE_RETENTION_MS": ("offsets_tombstone_retention_ms", int),
    "SDI_MQ_COMPACTION_CHECK_INTERVAL_S": ("compaction_check_interval_s", float),
    "SDI_MQ_COMPACTION_MIN_NEW_SEGMENTS": ("compaction_min_new_segments", int),
}


def _compaction_settings() -> dict[str, Any]:
    """The BrokerConfig fields that :data:`COMPACTION_ENVIRONMENT` variables set."""
    settings: dict[str, Any] = {}
    for name, (field, kind) in COMPACTION_ENVIRONMENT.items():
        text = os.environ.get(name)
        if text is None:
            continue
        try:
            settings[field] = kind(text)
        except ValueError:
            raise InvalidArgument(f"{name}={text!r} is not a number") from None
    return settings


def parse_peers(text: str) -> dict[int, tuple[str, int]]:
    """``--peers``: ``id@host:port`` items separated by commas.

    >>> parse_peers("0@127.0.0.1:9092,1@127.0.0.1:9095")
    {0: ('127.0.0.1', 9092), 1: ('127.0.0.1', 9095)}
    """
    peers: dict[int, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node, at, address = item.partition("@")
        host, colon, port = address.rpartition(":")
        if not (at and colon and is_decimal(node) and is_decimal(port) and host):
            raise InvalidArgument(
                f"--peers item {item!r} is not id@host:port (for example 0@127.0.0.1:9092)"
            )
        if int(node) in peers:
            raise InvalidArgument(f"--peers names broker {node} twice")
        peers[int(node)] = (host, int(port))
    return peers


def service(options: dict[str, Any]) -> Service:
    """The broker from ``sdi serve mq`` options."""
    peers = options.get("peers")
    return MqService(
        node_id=options.get("broker_id") or 0,
        partitions=options.get("partitions") or 1,
        fsync=options.get("fsync") or "interval",
        advertised_host=options.get("advertised_host"),
        peers=parse_peers(peers) if peers else None,
    )
