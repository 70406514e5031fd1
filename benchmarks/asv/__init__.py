"""asv suite: the cores' hot calls, tracked across commits (``make asv``)."""
