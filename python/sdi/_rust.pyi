"""Type stubs for the compiled module ``sdi._rust`` (built from ``rust/sdi-py``)."""

__version__: str

def _panic_for_test(message: str) -> None: ...
