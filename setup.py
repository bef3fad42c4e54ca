"""Builds the compiled hot path in fastgate/_core (Cython is a build requirement only)."""
import glob
import os

from setuptools import Extension, setup
from Cython.Build import cythonize

extensions = [
    Extension(
        "fastgate._core." + os.path.splitext(os.path.basename(path))[0],
        [path],
        extra_compile_args=["-O3"],
    )
    for path in sorted(glob.glob("fastgate/_core/*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        # Each .pyx states its own boundscheck/wraparound directives in its header: a global
        # default here would silently change the meaning of negative indexes in a module.
        compiler_directives={"language_level": 3},
        annotate=bool(os.environ.get("FASTGATE_ANNOTATE")),
    ),
)
