"""A consumer process for the crash tests: ``python _consumer_child.py RING``.

Attaches as the consumer, prints ``ready``, then pops slowly forever.
"""

from __future__ import annotations

import sys
import time

from sdi import ring


def main() -> None:
    consumer = ring.Consumer(sys.argv[1])
    print("ready", flush=True)
    while True:
        consumer.pop(1)
        time.sleep(0.001)


if __name__ == "__main__":
    main()
