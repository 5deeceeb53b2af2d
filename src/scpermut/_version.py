"""The installed version of scpermut, in a module of its own so any layer can import it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scpermut")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
