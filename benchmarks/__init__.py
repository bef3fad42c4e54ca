"""FastGate's load harness: ``python -m benchmarks --help``.

Starts on loopback a fast built-in upstream (``benchmarks.upstream``), the gateways under test
(fastgate, and nginx / HAProxy when installed, with generated configs), and a bundled load
generator (``benchmarks.loadgen``); measures scenarios (``benchmarks.scenarios``) and writes
JSON + Markdown under benchmarks/results/runs/. ``benchmarks/micro/`` holds the separate
pytest-benchmark microbenchmarks of the compiled core.
"""
