"""Type stubs for ``sdi._rust.geo`` (built from ``rust/sdi-py/src/geo.rs``); see ``sdi.geo``."""

from typing import Literal, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "EARTH_RADIUS_M",
    "GeoIndex",
    "geohash_decode",
    "geohash_encode",
    "geohash_neighbors",
    "haversine_m",
]

EARTH_RADIUS_M: float

@final
class GeoIndex:
    def __new__(
        cls,
        kind: Literal["cell", "geohash", "quadtree"],
        ids: npt.NDArray[np.uint64],
        lats: npt.NDArray[np.float64],
        lons: npt.NDArray[np.float64],
        capacity: int = 100,
    ) -> GeoIndex: ...
    @property
    def kind(self) -> str: ...
    def __len__(self) -> int: ...
    def memory_bytes(self) -> int: ...
    def radius(
        self, lat: float, lon: float, radius_m: float, limit: int | None = None, offset: int = 0
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64]]: ...
    def knn(
        self, lat: float, lon: float, k: int
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64]]: ...
    def radius_batch(
        self,
        lats: npt.NDArray[np.float64],
        lons: npt.NDArray[np.float64],
        radii_m: npt.NDArray[np.float64],
        limit: int | None = None,
        offset: int = 0,
        threads: int = 1,
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.float64]]: ...
    def knn_batch(
        self,
        lats: npt.NDArray[np.float64],
        lons: npt.NDArray[np.float64],
        k: int,
        threads: int = 1,
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.float64]]: ...
    def upsert(
        self,
        ids: npt.NDArray[np.uint64],
        lats: npt.NDArray[np.float64],
        lons: npt.NDArray[np.float64],
    ) -> None: ...
    def remove_many(self, ids: npt.NDArray[np.uint64]) -> int: ...
    def insert(self, id: int, lat: float, lon: float) -> None: ...
    def move(self, id: int, lat: float, lon: float) -> None: ...
    def remove(self, id: int) -> bool: ...

def geohash_encode(
    lats: npt.NDArray[np.float64], lons: npt.NDArray[np.float64], precision: int
) -> list[str]: ...
def geohash_decode(
    hashes: list[str],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def geohash_neighbors(hash: str) -> list[str | None]: ...
def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float: ...
