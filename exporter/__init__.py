"""Prometheus exporter for the ConnectyCube Admin Statistics API."""

# The version's one source: pyproject.toml reads it from here (setuptools' dynamic version),
# and so do the release workflow, the image's labels and the build info metric.
__version__ = "0.1.0"
