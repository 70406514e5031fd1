"""Build script: the Cython extensions and the Rust extension, in one wheel.

Everything else about the package is in pyproject.toml. maturin cannot
compile Cython, so setuptools builds both: setuptools-rust drives cargo for
``sdi._rust`` and cythonize compiles ``cython/sdi/*.pyx``.

For quick work on one side only: ``SDI_SKIP_RUST=1`` or ``SDI_SKIP_CYTHON=1``.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

ext_modules = []
if not os.environ.get("SDI_SKIP_CYTHON"):
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension(
                "sdi._resp",
                ["cython/sdi/_resp.pyx"],
                extra_compile_args=["-O3"],
            ),
            Extension(
                "sdi._kafka",
                ["cython/sdi/_kafka.pyx"],
                extra_compile_args=["-O3"],
            ),
            Extension(
                "sdi._fix",
                ["cython/sdi/_fix.pyx"],
                extra_compile_args=["-O3"],
            ),
        ],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    )

rust_extensions = []
if not os.environ.get("SDI_SKIP_RUST"):
    from setuptools_rust import Binding, RustExtension

    rust_extensions = [
        RustExtension(
            "sdi._rust",
            path="rust/sdi-py/Cargo.toml",
            binding=Binding.PyO3,
            # Editable installs are optimised too: tests and benchmarks run the real thing.
            debug=False,
        ),
    ]

setup(ext_modules=ext_modules, rust_extensions=rust_extensions)
