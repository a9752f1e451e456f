# The native module is built by cffi at install time; everything else is in
# pyproject.toml.
from setuptools import setup

setup(cffi_modules=["aiouring/_native/build.py:ffibuilder"])
