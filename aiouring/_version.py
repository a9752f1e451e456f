"""The version of aiouring, in one place: ``aiouring.__version__`` imports it and
the build reads it (pyproject.toml, ``[tool.setuptools.dynamic]``)."""

__version__ = "0.2.0"
