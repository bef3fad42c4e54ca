"""FastGate's load harness: ``python -m benchmarks`` (``./dev.sh bench``; ``--help``).

It starts, on loopback only:
  * a fast built-in upstream (``benchmarks.upstream``: raw uvloop protocol, precomputed tiny,
    1 MiB and SSE answers, keep-alive; also a fake OpenAI provider, ``benchmarks.ai``),
  * each target with a generated config in a temp dir: fastgate (``python -m fastgate run``),
    and nginx / HAProxy when installed (1 worker, upstream keep-alive, access log off); for the
    ``ai_*`` scenarios also LiteLLM's proxy and Portkey's gateway (``benchmarks.peers``,
    installed on first use under ~/.cache/fastgate-bench, never in the repo) and ``direct``
    (the fake provider without a gateway: the baseline of the added-latency figures),
  * the bundled load generator (``benchmarks.loadgen``: uvloop, keep-alive, N connections,
    optionally several processes), closed loop for max throughput and open loop at a fixed
    rate with latency measured from the intended send time (no coordinated omission).
The gateways are pinned to one half of the CPUs, the load side to the other.

Headline per scenario: gateway CPU microseconds per request at a fixed offered rate, median
over rounds in which the targets are interleaved, with the median per-round ratio between
them; max throughput, latency percentiles, peak RSS and errors beside it. Results go to
benchmarks/results/runs/<time>/results.{json,md,png} (git-ignored); ``--publish`` copies the
table to benchmarks/results/latest.md. ``--smoke`` runs every scenario for a moment (CI).

Adding a scenario is one declaration in ``benchmarks/scenarios.py``::

    Scenario("many_headers", "40 request headers",
             headers=tuple((f"X-H{i}", "v") for i in range(40)))

A scenario that needs gateway features lists them (``features=("jwt_rs256",)``); a target that
cannot provide one is reported "n/a: needs <feature>" (fastgate: when ``fastgate check``
rejects the generated config), so scenarios light up as features land.

``benchmarks/micro/`` holds the separate pytest-benchmark microbenchmarks of the compiled core.
"""
