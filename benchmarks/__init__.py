"""Benchmarks of the exporter beside the exporter a user would otherwise write.

``python -m benchmarks`` runs them (see ``benchmarks/README.md``); ``--quick`` is the
short run the test suite makes.
"""
