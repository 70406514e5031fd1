"""``sdi serve mq``: one Kafka-protocol broker on embedded defaults.

Point any Kafka client at it::

    sdi serve mq --port 9092 --data-dir /tmp/mq
    kcat -b 127.0.0.1:9092 -t demo -P <<< 'hello'
    kcat -b 127.0.0.1:9092 -t demo -C -e
"""

from __future__ import annotations

from typing import Any

from sdi.errors import InvalidArgument
from sdi.mq.broker import Broker, BrokerConfig
from sdi.mq.topics import TopicConfig
from sdi.runtime import Endpoint, Service, ServiceConfig

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
    ) -> None:
        if fsync not in ("every_batch", "interval", "never"):
            raise InvalidArgument(f"--fsync must be every_batch, interval or never, not {fsync!r}")
        self._node_id = node_id
        self._partitions = partitions
        self._fsync = fsync
        self._advertised_host = advertised_host
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


def service(options: dict[str, Any]) -> Service:
    """The broker from ``sdi serve mq`` options."""
    return MqService(
        node_id=options.get("broker_id") or 0,
        partitions=options.get("partitions") or 1,
        fsync=options.get("fsync") or "interval",
        advertised_host=options.get("advertised_host"),
    )
