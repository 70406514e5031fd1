"""Type stubs for the compiled module ``sdi._rust`` (built from ``rust/sdi-py``).

A package-style stub, because the module has compiled submodules
(``sdi._rust.ring``, ``sdi._rust.exchange``) that each get their own stub file.
"""

from . import ec as ec
from . import exchange as exchange
from . import geo as geo
from . import log as log
from . import lsm as lsm
from . import marketdata as marketdata
from . import ring as ring
from . import zset as zset

__all__ = [
    "__version__",
    "_panic_for_test",
    "ec",
    "exchange",
    "geo",
    "log",
    "lsm",
    "marketdata",
    "ring",
    "zset",
]

__version__: str

def _panic_for_test(message: str) -> None: ...
