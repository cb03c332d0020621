"""Prometheus exporter for the ConnectyCube Admin Statistics API."""

# Kept equal to pyproject.toml's version by a test; read here without importlib.metadata,
# which costs start-up time and memory for one string.
__version__ = "0.1.0"
