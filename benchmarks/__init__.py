"""Benchmarks of the exporter against the naive design a user would otherwise write.

``python -m benchmarks`` starts the simulator of the API, the exporter and the two
comparison designs as real processes on loopback, runs the scenarios, prints a Markdown
table and writes every raw figure as JSON. ``python -m benchmarks --help`` lists the
options; ``--quick`` is the few-second smoke run the test suite uses.

* ``baseline``: the exporter a user writes in an afternoon (``prometheus_client`` gauges,
  a loop calling the endpoints one after another, ``generate_latest`` on every scrape).
* ``scrape_time``: a design that asks the API on every scrape, like a generic JSON
  exporter.
"""
