"""Router and normalize_path micro-benchmarks (target: under 1 us per match).

Run: .venv/bin/python -m pytest benchmarks/micro/test_bench_router.py --benchmark-enable \
       --benchmark-warmup=on --benchmark-time-unit=ns -q

The table has 1,000 routes, shaped like a gateway in front of many services: per service an
exact health path, an item path with a param, a nested two-param path, and some prefixes; a few
host-bound and wildcard-host routes. Each benchmark checks its result first, so a routing
regression cannot hide behind a fast number.
"""
import pytest

from fastgate._core.router import MATCH, METHOD_NOT_ALLOWED, NOT_FOUND, Router, normalize_path

SERVICES = 200


def _routes():
    routes = []
    for i in range(SERVICES):
        s = "svc%d" % i
        routes.append((s + "-health", s + "-health", None, ["GET"], ["/%s/health" % s]))
        routes.append((s + "-items", s + "-items", None, ["GET", "POST"],
                       ["/%s/items" % s, "/%s/items/{id}" % s]))
        routes.append((s + "-orders", s + "-orders", None, None,
                       ["/%s/users/{uid}/orders/{oid}" % s]))
        if i % 2 == 0:
            routes.append((s + "-static", s + "-static", None, ["GET"], ["/%s/static/*" % s]))
        else:
            routes.append((s + "-v2", s + "-v2", None, None, ["/%s/v2/{ver}/*" % s]))
        if i % 4 == 0:
            routes.append((s + "-host", s + "-host", ["%s.tenant.example.com" % s], None,
                           ["/%s/items/{id}" % s]))
        elif i % 4 == 1:
            routes.append((s + "-wild", s + "-wild", ["*.%s.example.net" % s], ["GET"],
                           ["/%s/items/{id}" % s]))
        else:
            routes.append((s + "-admin", s + "-admin", None, ["PUT"], ["/%s/admin/{op}" % s]))
    assert len(routes) == 1000
    return routes


@pytest.fixture(scope="module")
def router():
    return Router(_routes())


HOST = b"gateway.example.com:8080"

CASES = {
    "exact": ((b"GET", HOST, b"/svc123/health"), MATCH, "svc123-health"),
    "param": ((b"GET", HOST, b"/svc77/items/12345"), MATCH, "svc77-items"),
    "two_params": ((b"DELETE", HOST, b"/svc150/users/u-1/orders/o-9"), MATCH, "svc150-orders"),
    "prefix": ((b"GET", HOST, b"/svc42/static/css/site/main.css"), MATCH, "svc42-static"),
    "param_prefix": ((b"GET", HOST, b"/svc43/v2/beta/a/b"), MATCH, "svc43-v2"),
    "exact_host": ((b"GET", b"svc8.tenant.example.com", b"/svc8/items/1"), MATCH, "svc8-host"),
    "wildcard_host": ((b"GET", b"eu.svc9.example.net:443", b"/svc9/items/1"), MATCH, "svc9-wild"),
    "miss": ((b"GET", HOST, b"/nothing/here/at/all"), NOT_FOUND, None),
    "miss_deep": ((b"GET", HOST, b"/svc5/users/u/orders"), NOT_FOUND, None),
    "method_not_allowed": ((b"PATCH", HOST, b"/svc3/health"), METHOD_NOT_ALLOWED, b"GET, HEAD"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bench_match(benchmark, router, case):
    args, kind, payload = CASES[case]
    assert router.match(*args)[:2] == (kind, payload)
    benchmark(router.match, *args)


@pytest.mark.parametrize("path", [b"/svc77/items/12345", b"/a/b/../c//d/%2e/%41"],
                         ids=["unchanged", "rewritten"])
def test_bench_normalize_path(benchmark, path):
    normalize_path(path)
    benchmark(normalize_path, path)


def test_bench_compile(benchmark):
    routes = _routes()
    benchmark.pedantic(Router, args=(routes,), rounds=5, iterations=1)
