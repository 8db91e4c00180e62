"""The lmforge command line: one typer sub-app per package, a thin layer over the Python API."""
