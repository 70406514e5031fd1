"""Topic configuration, under Kafka's own config names, and how it is kept on disk.

A topic's settings come from CreateTopics (``configs``) or the broker's
defaults. The names are Kafka's, so an admin client's ``new_topic`` configs
mean the same here:

- ``flush.messages``: ``1`` syncs every batch before the produce is
  acknowledged (:data:`sdi.mq.log.Fsync` ``"every_batch"``); unset, the
  ``flush.ms`` interval applies.
- ``flush.ms``: sync at most this long after an append (``"interval"``); an
  acknowledgement then means the records are in the page cache, so they
  survive a crash of the broker but not of the machine in that window.
- ``retention.ms``, ``retention.bytes``: delete whole old segments past these.
- ``segment.bytes``: roll to a new segment past this size.
- ``max.message.bytes``: the largest record batch a producer may send.
- ``min.insync.replicas``: how many in-sync replicas ``acks=all`` needs.
- ``cleanup.policy``: ``delete`` (retention deletes old segments) or
  ``compact`` (the broker compacts closed segments, keeping the latest
  record per key; retention then does not apply). ``compact,delete`` is
  not supported.
- ``delete.retention.ms``: under ``compact``, how long a tombstone (a null
  value) is kept before compaction drops it.

>>> config = TopicConfig.from_kafka({"flush.messages": "1", "retention.ms": "60000"})
>>> config.fsync, config.retention_ms
('every_batch', 60000)
>>> TopicConfig.from_kafka({"cleanup.policy": "compact"}).cleanup_policy
'compact'
>>> TopicConfig.from_kafka({"cleanup.policy": "compact,delete"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sdi.mq.topics.InvalidTopicConfig: cleanup.policy=compact,delete is not supported: ...
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sdi.errors import InvalidArgument
from sdi.mq.log import Fsync
from sdi.runtime.files import fsync_directory

__all__ = [
    "TOPIC_NAME",
    "InvalidPartitionCount",
    "InvalidReplicationFactor",
    "InvalidTopicConfig",
    "InvalidTopicName",
    "TopicConfig",
    "TopicMeta",
    "check_topic_name",
    "write_json_atomic",
]

#: Kafka's legal topic names: these characters, 1 to 249 of them, not "." or "..".
TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")

_DAY_MS = 24 * 3600 * 1000


class InvalidTopicName(InvalidArgument):
    """A topic name Kafka would not accept (INVALID_TOPIC_EXCEPTION)."""


class InvalidTopicConfig(InvalidArgument):
    """A topic setting that is unknown or out of range (INVALID_CONFIG)."""


class InvalidPartitionCount(InvalidArgument):
    """A partition count out of range (INVALID_PARTITIONS)."""


class InvalidReplicationFactor(InvalidArgument):
    """More replicas than live brokers (INVALID_REPLICATION_FACTOR)."""


def check_topic_name(name: str) -> None:
    """Raises :class:`InvalidTopicName` for a name Kafka would not accept."""
    if name in (".", "..") or not TOPIC_NAME.fullmatch(name):
        raise InvalidTopicName(
            f"topic name {name!r} is not valid: use 1 to 249 of the characters "
            "a-z A-Z 0-9 . _ - (and not '.' or '..')"
        )


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """The settings of one topic (see the module docs for their Kafka names)."""

    fsync: Fsync = "interval"
    fsync_interval_ms: int = 1000
    segment_bytes: int = 1 << 30
    retention_ms: int | None = 7 * _DAY_MS
    retention_bytes: int | None = None
    max_message_bytes: int = 1_048_588
    #: acks=all needs at least this many in-sync replicas (Kafka's min.insync.replicas).
    min_insync_replicas: int = 1
    #: "delete" (retention) or "compact" (keep the latest record per key).
    cleanup_policy: str = "delete"
    #: Under "compact": how long a tombstone stays (Kafka's delete.retention.ms).
    delete_retention_ms: int = 86_400_000

    def with_kafka(self, configs: Mapping[str, str | None]) -> TopicConfig:
        """These settings with ``configs`` (Kafka names and string values) applied over them."""
        changes: dict[str, Any] = {}
        for name, value in configs.items():
            if value is None:
                continue
            if name == "cleanup.policy":
                if value not in ("delete", "compact"):
                    raise InvalidTopicConfig(
                        f"cleanup.policy={value} is not supported: choose 'delete' or 'compact'"
                    )
                changes["cleanup_policy"] = value
                continue
            number = _integer(name, value)
            if name == "flush.messages":
                if number < 1:
                    raise InvalidTopicConfig(f"flush.messages must be at least 1, not {number}")
                # Kafka syncs after this many messages; only 1 (every batch) is kept exactly.
                if number == 1:
                    changes["fsync"] = "every_batch"
            elif name == "flush.ms":
                if number < 0:
                    raise InvalidTopicConfig(f"flush.ms must not be negative, not {number}")
                changes["fsync_interval_ms"] = number
                if changes.get("fsync") != "every_batch":
                    changes["fsync"] = "interval" if number < 2**62 else "never"
            elif name == "segment.bytes":
                changes["segment_bytes"] = number
            elif name == "retention.ms":
                changes["retention_ms"] = None if number < 0 else number
            elif name == "retention.bytes":
                changes["retention_bytes"] = None if number < 0 else number
            elif name == "delete.retention.ms":
                if number < 0:
                    raise InvalidTopicConfig(
                        f"delete.retention.ms must not be negative, not {number}"
                    )
                changes["delete_retention_ms"] = number
            elif name == "min.insync.replicas":
                if number < 1:
                    raise InvalidTopicConfig(
                        f"min.insync.replicas must be at least 1, not {number}"
                    )
                changes["min_insync_replicas"] = number
            elif name == "max.message.bytes":
                if number < 64:
                    raise InvalidTopicConfig(f"max.message.bytes must be at least 64, not {number}")
                changes["max_message_bytes"] = number
            else:
                raise InvalidTopicConfig(
                    f"topic config {name!r} is not supported; supported: cleanup.policy, "
                    "delete.retention.ms, flush.messages, flush.ms, max.message.bytes, "
                    "min.insync.replicas, retention.bytes, retention.ms, segment.bytes"
                )
        return replace(self, **changes)

    @classmethod
    def from_kafka(cls, configs: Mapping[str, str | None]) -> TopicConfig:
        return cls().with_kafka(configs)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TopicConfig:
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**known)


def _integer(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidTopicConfig(f"topic config {name} must be an integer, not {value!r}") from None


@dataclass(frozen=True, slots=True)
class TopicMeta:
    """What the broker records about a topic (``meta/topics/<name>.json``)."""

    name: str
    partitions: int
    config: TopicConfig
    topic_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "partitions": self.partitions,
            "config": self.config.to_json(),
            "topic_id": self.topic_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TopicMeta:
        return cls(
            str(data["name"]),
            int(data["partitions"]),
            TopicConfig.from_json(data["config"]),
            str(data["topic_id"]),
        )


def write_json_atomic(path: Path, data: Any) -> None:
    """Writes ``data`` as JSON to ``path`` so that a crash leaves the old file or the new one."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)
