"""The email service of chapter 8: SMTP in and out, a durable pipeline, HTTP API, push, search.

:mod:`sdi.email.service` runs it (``sdi serve email``); the parts are
:mod:`~sdi.email.smtp` (inbound SMTP and submission), :mod:`~sdi.email.pipeline`
(the incoming queue's processing workers), :mod:`~sdi.email.store` (metadata
in SQLite, or in PostgreSQL shared by several processes), :mod:`~sdi.email.blobs`
(raw messages by SHA-256, as local files or in an S3 bucket, and their garbage
collection), :mod:`~sdi.email.outgoing` (delivery with leases, retries, bounces),
:mod:`~sdi.email.api` (HTTP), :mod:`~sdi.email.push` (WebSocket) and
:mod:`~sdi.email.search` with :mod:`~sdi.email.query` (full-text search: the
interface, the language and the brute-force oracle) and :mod:`~sdi.email.lsmindex`
(the index the service runs on, the compiled LSM index of ``rust/sdi-lsm``).

>>> from sdi.email.query import parse
>>> parse("from:ann report*")
And(children=(Term(field='from', token='ann', prefix=False), Term(field=None, \
token='report', prefix=True)))
"""
