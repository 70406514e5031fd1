"""Imports kafka-python's protocol modules once, with its import-time warnings silenced.

kafka-python loads its JSON schemas through a deprecated importlib.resources
call, and the suite treats warnings as errors; the interop tests only need
the modules loaded.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.protocol.consumer.fetch
    import kafka.protocol.consumer.offsets
    import kafka.protocol.metadata.api_versions
    import kafka.protocol.metadata.metadata
    import kafka.protocol.producer.produce
    import kafka.record.default_records  # noqa: F401
