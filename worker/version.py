"""The package version, in a leaf module: the CLI, metrics and the plugin list read it
without importing the package's public face (which would make an import cycle)."""

__version__ = "0.1.0"
