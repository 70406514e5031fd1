"""sdi: the thirteen systems of *System Design Interview, Vol. 2*, built for real.

Compiled cores (Rust through ``sdi._rust``, Cython codecs) under a thin typed
Python API, with asyncio services that speak each field's standard protocol.

>>> import sdi
>>> sdi.__version__ == sdi._rust.__version__
True
"""

from __future__ import annotations

from sdi import _rust, errors

__version__: str = _rust.__version__

__all__ = ["__version__", "errors"]
