"""The message queue (book chapter 4): a Kafka-protocol broker over a segmented log.

- :mod:`sdi.mq.log`: the storage core, a partition as a directory of segments.
- :mod:`sdi.mq.protocol`: the Kafka wire codec (sans-IO).
- :mod:`sdi.mq.broker`: the broker (embed it, or run ``sdi serve mq``).
- :mod:`sdi.mq.group`: the consumer-group coordinator and the assignors.
- :mod:`sdi.mq.partitioner`: Kafka's default partitioner (murmur2).
- :mod:`sdi.mq.cluster`: a replicated cluster's metadata in etcd, and its controller.
- :mod:`sdi.mq.replica`: what a follower asks its leader.
- :mod:`sdi.mq.etcd`: the etcd client, and the etcd member each broker runs.
"""
