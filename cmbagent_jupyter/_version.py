"""The package version (read by the build, shown by the server's health endpoint)."""

__version__ = "0.1.0"
