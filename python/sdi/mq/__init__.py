"""The message queue: a Kafka-compatible broker built on a sans-IO wire codec.

:mod:`sdi.mq.protocol` is the codec (framing, primitives, record batches and
the first APIs); the broker that serves it comes later.
"""
