"""fastgate._core.router at its Python boundary: tables per rule, then differential properties
against the pure-Python reference below (no trie, no dicts: every route is tried)."""
import ipaddress
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fastgate._core.router import (
    MATCH,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    RouteConflict,
    Router,
    normalize_path,
)

# ---------------------------------------------------------------------------------------------
# Reference implementation: the rules written down as directly as possible
# ---------------------------------------------------------------------------------------------

UNRESERVED = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")


def ref_canon_segment(seg: bytes) -> bytes:
    out = b""
    i = 0
    while i < len(seg):
        if seg[i:i + 1] == b"%":
            hexpart = seg[i + 1:i + 3]
            if len(hexpart) != 2 or not re.fullmatch(rb"[0-9a-fA-F]{2}", hexpart):
                raise ValueError("bad escape")
            v = int(hexpart, 16)
            if v == 0:
                raise ValueError("NUL")
            out += bytes([v]) if v in UNRESERVED else b"%" + hexpart.upper()
            i += 3
        else:
            if seg[i] == 0:
                raise ValueError("NUL")
            out += seg[i:i + 1]
            i += 1
    return out


def ref_normalize(path: bytes) -> bytes:
    if not path.startswith(b"/"):
        raise ValueError("relative")
    segs = path.split(b"/")[1:]
    kept = []
    trailing = False
    for i, raw in enumerate(segs):
        seg = ref_canon_segment(raw)
        last = i == len(segs) - 1
        trailing = False
        if seg == b"":
            trailing = last
        elif seg == b".":
            trailing = last
        elif seg == b"..":
            if not kept:
                raise ValueError("above root")
            kept.pop()
            trailing = last
        else:
            kept.append(seg)
    out = b"/" + b"/".join(kept)
    if trailing and kept:
        out += b"/"
    return out


def ref_host_key(raw):
    if not raw:
        return None
    if raw.startswith(b"["):
        end = raw.find(b"]")
        if end < 0:
            return None
        inner = raw[1:end].lower().decode("latin-1")
        try:
            inner = ipaddress.IPv6Address(inner).compressed
        except ValueError:
            pass
        return ("[" + inner + "]").encode("latin-1")
    h = raw.split(b":", 1)[0]
    if h.endswith(b"."):
        h = h[:-1]
    return h.lower() or None


def ref_host_pattern(h: str) -> str:
    h = h.lower()
    if h.startswith("[") or h.count(":") >= 2:
        return "[" + ipaddress.IPv6Address(h.strip("[]")).compressed + "]"
    return h[:-1] if h.endswith(".") else h


def ref_host_rank(pattern, key):
    """Smaller is more specific; None when the host pattern does not cover the request host."""
    if pattern is None:
        return (2, 0)
    if key is None:
        return None
    key = key.decode("latin-1")
    if pattern.startswith("*."):
        suffix = pattern[1:]
        if key.endswith(suffix) and len(key) > len(suffix):
            return (1, -len(suffix))
        return None
    return (0, 0) if key == pattern else None


def ref_split_pattern(pattern: str):
    segs = pattern[1:].split("/")
    star = segs[-1] == "*"
    if star:
        segs = segs[:-1]
        if segs == [""]:
            segs = []
    return segs, star


def ref_shape(pattern: str):
    segs, star = ref_split_pattern(pattern)
    return tuple("{}" if s.startswith("{") else s for s in segs), star


def ref_path_match(pattern: str, path: bytes):
    """-> (rank, params) or None. rank: smaller is more specific."""
    psegs, star = ref_split_pattern(pattern)
    rsegs = path.decode("latin-1")[1:].split("/")
    if star:
        if len(rsegs) < len(psegs):
            return None
    elif len(rsegs) != len(psegs):
        return None
    params = {}
    mask = []
    for p, r in zip(psegs, rsegs):
        if p.startswith("{"):
            if r == "":
                return None
            params[p[1:-1]] = r
            mask.append(1)
        else:
            if p != r:
                return None
            mask.append(0)
    if star:
        params["*"] = "/".join(rsegs[len(psegs):])
        return (2, -len(psegs), tuple(mask)), params
    if params:
        return (1, 0, tuple(mask)), params
    return (0, 0, ()), None


class Reference:
    def __init__(self, routes):
        self.routes = list(routes)
        seen = {}
        for ri, (payload, name, hosts, methods, paths) in enumerate(self.routes):
            for h in hosts or [None]:
                hp = None if h is None else ref_host_pattern(h)
                for p in paths:
                    for m in methods or ["*any*"]:
                        key = (hp, ref_shape(p), m)
                        if key in seen:
                            raise RouteConflict("conflict")
                        seen[key] = ri

    def match(self, method: bytes, host: bytes, path: bytes):
        if not path.startswith(b"/"):
            return (NOT_FOUND, None, None)
        key = ref_host_key(host)
        groups = {}   # (host rank, path rank) -> list of (methods, payload, params)
        for payload, name, hosts, methods, paths in self.routes:
            for h in hosts or [None]:
                hrank = ref_host_rank(None if h is None else ref_host_pattern(h), key)
                if hrank is None:
                    continue
                for p in paths:
                    m = ref_path_match(p, path)
                    if m is None:
                        continue
                    groups.setdefault((hrank, m[0]), []).append((methods, payload, m[1]))
        allow = set()
        meth = method.decode("latin-1")
        for rank in sorted(groups):
            cands = groups[rank]
            chosen = ([c for c in cands if c[0] and meth in c[0]]
                      or [c for c in cands if meth == "HEAD" and c[0] and "GET" in c[0]]
                      or [c for c in cands if not c[0]])
            if chosen:
                assert len(chosen) == 1
                return (MATCH, chosen[0][1], chosen[0][2])
            for c in cands:
                allow.update(c[0])
                if "GET" in c[0]:
                    allow.add("HEAD")
        if allow:
            return (METHOD_NOT_ALLOWED, ", ".join(sorted(allow)).encode(), None)
        return (NOT_FOUND, None, None)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def route(name, paths, hosts=None, methods=None):
    return (name, name, hosts, methods, paths)


def build(*routes):
    return Router(list(routes))


def hit(router, path, host=b"example.net", method=b"GET"):
    kind, payload, params = router.match(method, host, path)
    assert kind == MATCH, (path, host, method, kind, payload)
    return payload, params


# ---------------------------------------------------------------------------------------------
# Path shapes and params
# ---------------------------------------------------------------------------------------------

SHAPES = build(
    route("root", ["/"]),
    route("orders", ["/orders"]),
    route("orders-slash", ["/orders/"]),
    route("order", ["/orders/{id}"]),
    route("post", ["/u/{uid}/posts/{pid}"]),
    route("static", ["/static/*"]),
    route("user-files", ["/files/{owner}/*"]),
)


@pytest.mark.parametrize("path, payload, params", [
    (b"/", "root", None),
    (b"/orders", "orders", None),
    (b"/orders/", "orders-slash", None),
    (b"/orders/17", "order", {"id": "17"}),
    (b"/orders/a%2Fb", "order", {"id": "a%2Fb"}),
    (b"/orders/\xc3\xa9", "order", {"id": "\xc3\xa9"}),       # raw bytes, latin-1
    (b"/u/7/posts/9", "post", {"uid": "7", "pid": "9"}),
    (b"/static", "static", {"*": ""}),
    (b"/static/", "static", {"*": ""}),
    (b"/static/a", "static", {"*": "a"}),
    (b"/static/a/b/c.css", "static", {"*": "a/b/c.css"}),
    (b"/static/a/", "static", {"*": "a/"}),
    (b"/files/bob", "user-files", {"owner": "bob", "*": ""}),
    (b"/files/bob/x/y", "user-files", {"owner": "bob", "*": "x/y"}),
])
def test_shapes_hit(path, payload, params):
    assert hit(SHAPES, path) == (payload, params)


@pytest.mark.parametrize("path", [
    b"/order", b"/orders/17/", b"/orders/17/x", b"/u/7/posts", b"/u//posts/9", b"/u/7/posts/",
    b"/staticx", b"/statics/a", b"/files", b"/files/", b"/nope", b"", b"orders", b"*",
])
def test_shapes_miss(path):
    assert SHAPES.match(b"GET", b"example.net", path) == (NOT_FOUND, None, None)


def test_params_is_a_fresh_dict_each_time():
    _, p1 = hit(SHAPES, b"/orders/1")
    p1["id"] = "mutated"
    assert hit(SHAPES, b"/orders/1")[1] == {"id": "1"}


def test_payload_is_returned_as_is():
    payload = object()
    r = Router([(payload, "r", None, None, ["/x", "/y/{a}"])])
    assert r.match(b"GET", b"", b"/x")[1] is payload
    assert r.match(b"GET", b"", b"/y/1")[1] is payload


def test_root_prefix_takes_everything_else():
    r = build(route("all", ["/*"]), route("x", ["/x"]))
    assert hit(r, b"/") == ("all", {"*": ""})
    assert hit(r, b"/x") == ("x", None)
    assert hit(r, b"/x/y") == ("all", {"*": "x/y"})
    assert hit(r, b"/a//b") == ("all", {"*": "a//b"})


def test_deep_paths_do_not_break_matching():
    deep = b"/a" * 500
    r = build(route("all", ["/*"]), route("a", ["/a/{x}"]))
    assert hit(r, deep) == ("all", {"*": deep[1:].decode()})
    r2 = build(route("deep", ["/" + "/".join(["{p%d}" % i for i in range(64)])]))
    path = b"/" + b"/".join(b"%d" % i for i in range(64))
    assert hit(r2, path)[1]["p63"] == "63"
    assert r2.match(b"GET", b"", path + b"/x")[0] == NOT_FOUND


# ---------------------------------------------------------------------------------------------
# Path precedence: exact > params (literal beats param, with backtracking) > prefix (longer wins)
# ---------------------------------------------------------------------------------------------

PRECEDENCE = build(
    route("exact", ["/a/b/c"]),
    route("p-lit-lit", ["/a/b/{z}"]),
    route("p-lit-par", ["/a/{y}/c"]),
    route("p-par", ["/{x}/{y}/{z}"]),
    route("p-backtrack", ["/m/{y}/end"]),
    route("p-deadend", ["/m/n/other"]),
    route("pre-a", ["/a/*"]),
    route("pre-ab", ["/a/b/*"]),
    route("pre-a-par", ["/a/{q}/d/*"]),
    route("pre-root", ["/*"]),
)


@pytest.mark.parametrize("path, payload", [
    (b"/a/b/c", "exact"),                 # exact beats every param and prefix pattern
    (b"/a/b/x", "p-lit-lit"),             # literal at segment 2 beats param there
    (b"/a/q/c", "p-lit-par"),             # literal a beats {x} at segment 1
    (b"/z/q/c", "p-par"),
    (b"/m/n/end", "p-backtrack"),         # literal n dead-ends; backtrack to {y}
    (b"/m/n/other", "p-deadend"),
    (b"/a/b", "pre-ab"),                  # no 2-segment param pattern: longest prefix wins
    (b"/a/b/c/d", "pre-ab"),              # params need the whole path: prefix it is
    (b"/a/x", "pre-a"),
    (b"/a/x/d/e", "pre-a-par"),           # 3-segment prefix beats /a/*
    (b"/a/b/d/e", "pre-a-par"),           # depth beats the literal b of /a/b/*
    (b"/a", "pre-a"),
    (b"/q", "pre-root"),
    (b"/", "pre-root"),
])
def test_path_precedence(path, payload):
    assert hit(PRECEDENCE, path)[0] == payload


def test_param_beats_prefix_even_when_prefix_is_more_literal():
    r = build(route("pre", ["/static/*"]), route("par", ["/{a}/{b}"]))
    assert hit(r, b"/static/x") == ("par", {"a": "static", "b": "x"})
    assert hit(r, b"/static/x/y") == ("pre", {"*": "x/y"})


def test_equal_depth_prefixes_literal_first():
    r = build(route("par", ["/u/{id}/*"]), route("lit", ["/u/admin/*"]))
    assert hit(r, b"/u/admin/x") == ("lit", {"*": "x"})
    assert hit(r, b"/u/bob/x") == ("par", {"id": "bob", "*": "x"})


def test_backtracking_through_several_levels():
    r = build(
        route("l1", ["/a/b/c/d"]),          # exact; never a candidate for /a/b/c/x
        route("l2", ["/a/b/{c}/y"]),
        route("l3", ["/a/{b}/c/x"]),
        route("l4", ["/{a}/b/c/x"]),
    )
    assert hit(r, b"/a/b/c/x")[0] == "l3"
    assert hit(r, b"/a/b/c/y")[0] == "l2"
    assert hit(r, b"/z/b/c/x")[0] == "l4"


def test_wide_levels_find_every_literal():
    """Hundreds of literal siblings at one level (the per-node hash table, probing included)."""
    keys = ["k%d" % i for i in range(300)] + ["", "K0", "k0 ", "%41", "a" * 200]
    routes = [route("r%d" % i, ["/%s/{x}" % k if k else "/{y}/"]) for i, k in enumerate(keys)
              if "%" not in k and " " not in k]
    routes.append(route("fallback", ["/{a}/{b}"]))
    r = Router(routes)
    for i in range(300):
        assert hit(r, b"/k%d/v" % i) == ("r%d" % i, {"x": "v"})
    assert hit(r, b"/K0/v")[0] == "r301"
    assert hit(r, b"/" + b"a" * 200 + b"/v")[0] == "r304"
    for miss in [b"/k300/v", b"/k/v", b"/k00/v", b"/kk1/v", b"/k1\x00/v", b"/" + b"a" * 199 + b"/v"]:
        assert hit(r, miss)[0] == "fallback", miss


def test_param_never_matches_empty_segment():
    r = build(route("p", ["/a/{x}"]), route("t", ["/a/{x}/"]))
    assert r.match(b"GET", b"", b"/a/")[0] == NOT_FOUND
    assert hit(r, b"/a/1/") == ("t", {"x": "1"})


def test_trailing_slash_is_significant():
    r = build(route("plain", ["/a"]), route("slash", ["/a/"]))
    assert hit(r, b"/a")[0] == "plain"
    assert hit(r, b"/a/")[0] == "slash"


def test_literal_patterns_are_canonicalized_like_requests():
    r = build(route("enc", ["/caf%c3%a9/%7Euser/a%2fb"]))
    assert hit(r, normalize_path(b"/caf%C3%A9/~user/a%2Fb"))[0] == "enc"
    assert hit(r, normalize_path(b"/caf%c3%a9/%7euser/a%2fb"))[0] == "enc"


# ---------------------------------------------------------------------------------------------
# Hosts
# ---------------------------------------------------------------------------------------------

HOSTS = build(
    route("exact", ["/h"], hosts=["api.example.com"]),
    route("wild-long", ["/h"], hosts=["*.b.example.org"]),
    route("wild-short", ["/h"], hosts=["*.example.org"]),
    route("v6", ["/h"], hosts=["[::1]"]),
    route("v6-bare", ["/h"], hosts=["2001:DB8:0:0::1"]),
    route("v4", ["/h"], hosts=["127.0.0.1"]),
    route("any", ["/h"]),
)


@pytest.mark.parametrize("host, payload", [
    (b"api.example.com", "exact"),
    (b"API.Example.COM", "exact"),
    (b"api.example.com:8443", "exact"),
    (b"api.example.com.", "exact"),
    (b"Api.Example.Com.:80", "exact"),
    (b"x.api.example.com", "any"),
    (b"example.com", "any"),
    (b"a.example.org", "wild-short"),
    (b"a.b.example.org", "wild-long"),
    (b"x.y.b.example.org", "wild-long"),
    (b"b.example.org", "wild-short"),      # *.b.example.org needs a label before b
    (b"A.B.EXAMPLE.ORG:1", "wild-long"),
    (b"example.org", "any"),               # *.example.org does not cover example.org
    (b".example.org", "any"),
    (b"xexample.org", "any"),
    (b"[::1]", "v6"),
    (b"[::1]:8080", "v6"),
    (b"[0:0:0:0:0:0:0:1]:8080", "v6"),    # canonical form compared
    (b"[2001:db8::1]", "v6-bare"),
    (b"[2001:DB8::1]:443", "v6-bare"),
    (b"[::2]", "any"),
    (b"[::1", "any"),                      # malformed: only any-host routes
    (b"127.0.0.1:9000", "v4"),
    (b"", "any"),
    (b":80", "any"),
    (b".", "any"),
])
def test_host_forms(host, payload):
    assert hit(HOSTS, b"/h", host=host)[0] == payload


def test_host_none_behaves_like_missing():
    assert hit(HOSTS, b"/h", host=None)[0] == "any"


def test_host_routes_without_any_host_fallback_404():
    r = build(route("only", ["/x"], hosts=["a.example.com"]))
    assert hit(r, b"/x", host=b"a.example.com")[0] == "only"
    assert r.match(b"GET", b"b.example.com", b"/x") == (NOT_FOUND, None, None)
    assert r.match(b"GET", b"", b"/x") == (NOT_FOUND, None, None)


def test_host_tier_beats_path_specificity():
    r = build(
        route("host-prefix", ["/*"], hosts=["api.example.com"]),
        route("wild-param", ["/orders/{id}"], hosts=["*.example.com"]),
        route("any-exact", ["/orders/1"]),
    )
    assert hit(r, b"/orders/1", host=b"api.example.com")[0] == "host-prefix"
    assert hit(r, b"/orders/1", host=b"web.example.com")[0] == "wild-param"
    assert hit(r, b"/orders/1", host=b"other.net")[0] == "any-exact"


def test_route_with_several_hosts_and_paths():
    r = build(route("multi", ["/a", "/b/{x}"], hosts=["one.test", "*.two.test"]),
              route("any", ["/*"]))
    assert hit(r, b"/a", host=b"one.test")[0] == "multi"
    assert hit(r, b"/b/1", host=b"x.two.test") == ("multi", {"x": "1"})
    assert hit(r, b"/a", host=b"three.test")[0] == "any"


# ---------------------------------------------------------------------------------------------
# Methods, fallback, 404 vs 405
# ---------------------------------------------------------------------------------------------

def test_method_selection_on_one_pattern():
    r = build(route("get", ["/x"], methods=["GET"]),
              route("post", ["/x"], methods=["POST", "PUT"]),
              route("other", ["/x"]))
    assert hit(r, b"/x", method=b"GET")[0] == "get"
    assert hit(r, b"/x", method=b"HEAD")[0] == "get"        # GET answers HEAD ...
    assert hit(r, b"/x", method=b"PUT")[0] == "post"
    assert hit(r, b"/x", method=b"DELETE")[0] == "other"    # ... before a route with no methods
    assert hit(r, b"/x", method=b"get")[0] == "other"       # methods are case-sensitive


def test_explicit_head_beats_get():
    r = build(route("get", ["/x/{a}"], methods=["GET"]), route("head", ["/x/{b}"], methods=["HEAD"]))
    assert hit(r, b"/x/1", method=b"HEAD") == ("head", {"b": "1"})
    assert hit(r, b"/x/1", method=b"GET") == ("get", {"a": "1"})


def test_method_fallback_to_less_specific_path_and_host():
    r = build(
        route("exact-get", ["/o/1"], hosts=["api.test"], methods=["GET"]),
        route("param-post", ["/o/{id}"], hosts=["api.test"], methods=["POST"]),
        route("prefix-put", ["/o/*"], hosts=["api.test"], methods=["PUT"]),
        route("wild-patch", ["/o/1"], hosts=["*.test"], methods=["PATCH"]),
        route("any-delete", ["/*"], methods=["DELETE"]),
    )
    h = b"api.test"
    assert hit(r, b"/o/1", h, b"GET")[0] == "exact-get"
    assert hit(r, b"/o/1", h, b"POST") == ("param-post", {"id": "1"})
    assert hit(r, b"/o/1", h, b"PUT") == ("prefix-put", {"*": "1"})
    assert hit(r, b"/o/1", h, b"PATCH")[0] == "wild-patch"
    assert hit(r, b"/o/1", h, b"DELETE") == ("any-delete", {"*": "o/1"})
    assert r.match(b"OPTIONS", h, b"/o/1") == (
        METHOD_NOT_ALLOWED, b"DELETE, GET, HEAD, PATCH, POST, PUT", None)
    # Allow is the union of candidates for this host only.
    assert r.match(b"OPTIONS", b"x.test", b"/o/1") == (METHOD_NOT_ALLOWED, b"DELETE, PATCH", None)
    assert r.match(b"OPTIONS", b"other", b"/o/1") == (METHOD_NOT_ALLOWED, b"DELETE", None)


@pytest.mark.parametrize("method, path, expected", [
    (b"GET", b"/r", (MATCH, "r", None)),
    (b"HEAD", b"/r", (MATCH, "r", None)),
    (b"POST", b"/r", (METHOD_NOT_ALLOWED, b"GET, HEAD", None)),
    (b"POST", b"/w", (METHOD_NOT_ALLOWED, b"DELETE, PUT", None)),
    (b"HEAD", b"/w", (METHOD_NOT_ALLOWED, b"DELETE, PUT", None)),
    (b"POST", b"/p/1", (METHOD_NOT_ALLOWED, b"GET, HEAD", None)),
    (b"POST", b"/s/deep/er", (METHOD_NOT_ALLOWED, b"GET, HEAD, PUT", None)),
    (b"POST", b"/missing", (NOT_FOUND, None, None)),
    (b"POST", b"/p/", (NOT_FOUND, None, None)),
])
def test_404_vs_405(method, path, expected):
    r = build(route("r", ["/r"], methods=["GET"]),
              route("w", ["/w"], methods=["PUT", "DELETE"]),
              route("p", ["/p/{id}"], methods=["GET"]),
              route("s1", ["/s/*"], methods=["PUT"]),
              route("s2", ["/s/deep/*"], methods=["GET"]))
    assert r.match(method, b"h", path) == expected


# ---------------------------------------------------------------------------------------------
# Invalid patterns, hosts, methods; conflicts
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, fragment", [
    ("orders", "must start with '/'"),
    ("", "must start with '/'"),
    ("/a/*/b", "'*'"),
    ("/a*", "'*'"),
    ("/*/a", "'*'"),
    ("/a/*/", "'*'"),
    ("/a/{}", "empty parameter name"),
    ("/a/{id", "unbalanced"),
    ("/a/id}", "unbalanced"),
    ("/a/{id}{x}", "unbalanced"),
    ("/a/x{id}", "unbalanced"),
    ("/a/{i-d}", "parameter name"),
    ("/a/{id}/{id}", "duplicate parameter name 'id'"),
    ("/a/{b", "unbalanced"),
    ("/a{b}", "unbalanced"),
    ("/a//b", "empty segment"),
    ("//", "empty segment"),
    ("/a//*", "empty segment"),
    ("/a/./b", "dot segment"),
    ("/a/%2e%2E", "dot segment"),
    ("/a b", "not allowed"),
    ("/a?q", "not allowed"),
    ("/a#f", "not allowed"),
    ("/caf\u00e9", "not allowed"),
    ("/a%zz", "percent-escape"),
    ("/a%2", "percent-escape"),
    ("/a%00", "NUL"),
    ("/" + "/".join("x" * 65), "segments"),
])
def test_invalid_patterns(pattern, fragment):
    with pytest.raises(ValueError) as info:
        build(route("bad", [pattern]))
    assert fragment in str(info.value)
    assert "bad" in str(info.value)
    assert not isinstance(info.value, RouteConflict)


@pytest.mark.parametrize("host", [
    "", "api.example.com:8080", "a.*.com", "*", "*.", "a..b", "exa mple.com", "[::1", "[nothost]",
    "b\u00fccher.de",
])
def test_invalid_hosts(host):
    with pytest.raises(ValueError):
        build(route("bad", ["/x"], hosts=[host]))


@pytest.mark.parametrize("methods", [["get"], ["GE T"], [""], ["GET", "GET"], [1]])
def test_invalid_methods(methods):
    with pytest.raises(ValueError):
        build(route("bad", ["/x"], methods=methods))


@pytest.mark.parametrize("item", [("p", "r", None, None), ("p", "r", None, None, "/x"),
                                  ("p", "r", None, None, []), ("p", 3, None, None, ["/x"])])
def test_malformed_route_items(item):
    with pytest.raises(ValueError):
        Router([item])


def test_empty_methods_and_hosts_mean_any():
    r = build(route("r", ["/x"], hosts=[], methods=[]))
    assert hit(r, b"/x", host=b"whatever", method=b"BREW")[0] == "r"


@pytest.mark.parametrize("a, b", [
    (route("a", ["/x"]), route("b", ["/x"])),
    (route("a", ["/x/{id}"]), route("b", ["/x/{other}"])),
    (route("a", ["/x/*"], methods=["GET", "POST"]), route("b", ["/x/*"], methods=["POST"])),
    (route("a", ["/x"], hosts=["API.test."]), route("b", ["/x"], hosts=["api.test"])),
    (route("a", ["/x"], hosts=["*.test"]), route("b", ["/x"], hosts=["*.TEST"])),
    (route("a", ["/x"], hosts=["[::1]"]), route("b", ["/x"], hosts=["0::1"])),
    (route("a", ["/{p}/*"]), route("b", ["/{q}/*"])),
    (route("a", ["/caf%c3%a9"]), route("b", ["/caf%C3%A9"])),
    (route("a", ["/%7e"]), route("b", ["/~"])),
])
def test_conflicts(a, b):
    with pytest.raises(RouteConflict) as info:
        Router([a, b])
    message = str(info.value)
    assert "'a'" in message and "'b'" in message


def test_conflict_within_one_route():
    with pytest.raises(RouteConflict, match="'a'"):
        build(route("a", ["/x", "/x"]))


@pytest.mark.parametrize("a, b", [
    (route("a", ["/x"], methods=["GET"]), route("b", ["/x"], methods=["POST"])),
    (route("a", ["/x"], methods=["GET"]), route("b", ["/x"])),          # explicit beats any
    (route("a", ["/x"], methods=["GET"]), route("b", ["/x"], methods=["HEAD"])),
    (route("a", ["/x"], hosts=["a.test"]), route("b", ["/x"])),
    (route("a", ["/x"], hosts=["a.test"]), route("b", ["/x"], hosts=["*.a.test"])),
    (route("a", ["/x"]), route("b", ["/x/"])),
    (route("a", ["/x/*"]), route("b", ["/x/{p}"])),
    (route("a", ["/x/*"]), route("b", ["/x"])),
])
def test_not_conflicts(a, b):
    Router([a, b])


def test_route_count_and_repr():
    r = build(route("a", ["/a"]), route("b", ["/b"], hosts=["x.test"]))
    assert r.route_count == 2
    assert "2 routes" in repr(r)


def test_empty_router():
    r = Router([])
    assert r.match(b"GET", b"h", b"/") == (NOT_FOUND, None, None)


def test_argument_types():
    with pytest.raises(TypeError):
        SHAPES.match(b"GET", b"h", None)
    with pytest.raises(TypeError):
        SHAPES.match(None, b"h", b"/")
    with pytest.raises(TypeError):
        SHAPES.match("GET", b"h", b"/")


# ---------------------------------------------------------------------------------------------
# normalize_path
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    (b"/", b"/"),
    (b"/a/b", b"/a/b"),
    (b"/a/b/", b"/a/b/"),
    (b"//", b"/"),
    (b"///a///b//", b"/a/b/"),
    (b"/a/./b", b"/a/b"),
    (b"/a/.", b"/a/"),
    (b"/.", b"/"),
    (b"/./", b"/"),
    (b"/a/b/..", b"/a/"),
    (b"/a/b/../c", b"/a/c"),
    (b"/a/../b/../c", b"/c"),
    (b"/a/..", b"/"),
    (b"/a/b/../../", b"/"),
    (b"/a/%2e/b", b"/a/b"),
    (b"/a/%2E%2e/b", b"/b"),
    (b"/a/.%2e/b", b"/b"),
    (b"/a/b/%2e%2e", b"/a/"),
    (b"/a//..//b", b"/b"),
    (b"/a/...", b"/a/..."),             # not a dot segment
    (b"/a/..b/.c", b"/a/..b/.c"),
    (b"/%61dmin", b"/admin"),           # unreserved escapes decoded
    (b"/%7Euser%2D%5f", b"/~user-_"),
    (b"/a%2fb", b"/a%2Fb"),             # reserved stays encoded, hex upper-cased
    (b"/a%2Fb", b"/a%2Fb"),
    (b"/%e9", b"/%E9"),
    (b"/%25", b"/%25"),
    (b"/a?b", b"/a?b"),                 # no query handling: callers strip it
    (b"/\xff", b"/\xff"),
])
def test_normalize_table(raw, expected):
    assert normalize_path(raw) == expected
    assert normalize_path(expected) is expected


@pytest.mark.parametrize("raw", [
    b"", b"a", b"a/b", b"*", b"http://x/", b"/..", b"/../a", b"/a/../..", b"/%2e%2e", b"/./..",
    b"/a/../../b", b"/%zz", b"/%g0", b"/%", b"/%4", b"/a%", b"/%00", b"/a/%00/b", b"/a\x00b",
    b"/ok/%2e%2e/%2E%2E/..",
])
def test_normalize_rejects(raw):
    with pytest.raises(ValueError):
        normalize_path(raw)


@pytest.mark.parametrize("raw", [b"/", b"/a", b"/a/b/", b"/a/%2F", b"/x.y/..z/...", b"/%E9%FF"])
def test_normalize_fast_path_returns_same_object(raw):
    path = bytes(bytearray(raw))        # a fresh object, not an interned constant
    assert normalize_path(path) is path


def test_normalize_type():
    with pytest.raises(TypeError):
        normalize_path("/a")
    with pytest.raises(TypeError):
        normalize_path(None)


# ---------------------------------------------------------------------------------------------
# Differential properties
# ---------------------------------------------------------------------------------------------

path_bytes = st.lists(
    st.sampled_from([b"a", b"b", b".", b"..", b"", b"%2e", b"%2E", b"%41", b"%2f", b"%zz", b"%0",
                     b"%00", b"x%", b"~", b"\xff"]),
    max_size=7,
).map(lambda segs: b"/" + b"/".join(segs))


@settings(max_examples=200, deadline=None)
@given(st.one_of(path_bytes, st.binary(max_size=12).map(lambda b: b"/" + b)))
def test_normalize_matches_reference(path):
    try:
        expected = ref_normalize(path)
    except ValueError:
        with pytest.raises(ValueError):
            normalize_path(path)
        return
    got = normalize_path(path)
    assert got == expected
    assert (got is path) == (expected == path)
    assert normalize_path(got) is got            # idempotent, and the result is fast-path


LITERALS = ["a", "b", "c"]
REQ_SEGMENTS = [b"a", b"b", b"c", b"d"]
HOST_PATTERNS = ["a.com", "b.a.com", "*.a.com", "*.com", "A.COM.", "[::1]"]
REQ_HOSTS = [b"a.com", b"b.a.com", b"x.b.a.com:80", b"B.A.COM.", b"z.com", b"com", b"",
             b"[::1]:8080", b"[0::1]"]
METHODS = ["GET", "HEAD", "POST"]
REQ_METHODS = [b"GET", b"HEAD", b"POST", b"DELETE"]


@st.composite
def route_sets(draw):
    routes = []
    for ri in range(draw(st.integers(1, 7))):
        paths = []
        for pi in range(draw(st.integers(1, 2))):
            segs = []
            for si in range(draw(st.integers(0, 3))):
                if draw(st.booleans()):
                    segs.append("{p%d_%d_%d}" % (ri, pi, si))
                else:
                    segs.append(draw(st.sampled_from(LITERALS)))
            tail = draw(st.sampled_from(["", "", "/*", "/"]))
            if not segs and tail == "":
                tail = "/"
            if not segs:
                paths.append(tail)
            else:
                paths.append("/" + "/".join(segs) + tail)
        hosts = draw(st.one_of(st.none(), st.lists(st.sampled_from(HOST_PATTERNS), max_size=2,
                                                    unique=True)))
        methods = draw(st.one_of(st.none(), st.lists(st.sampled_from(METHODS), min_size=1,
                                                      max_size=2, unique=True)))
        routes.append(("r%d" % ri, "r%d" % ri, hosts, methods, paths))
    return routes


def request_paths(routes):
    """Paths likely to hit: the patterns instantiated, plus random ones."""
    concrete = []
    for _, _, _, _, paths in routes:
        for p in paths:
            concrete.append(re.sub(r"\{[^}]*\}", "b", p).replace("*", "c/d").encode())
            concrete.append(re.sub(r"\{[^}]*\}", "zz", p).replace("/*", "").encode())
    rand = st.lists(st.sampled_from(REQ_SEGMENTS + [b""]), max_size=4).map(
        lambda s: b"/" + b"/".join(s))
    return st.one_of(st.sampled_from(concrete), rand)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_router_matches_reference(data):
    routes = data.draw(route_sets())
    try:
        ref = Reference(routes)
    except RouteConflict:
        event("route set conflicts")
        with pytest.raises(RouteConflict):
            Router(routes)
        return
    router = Router(routes)
    paths = request_paths(routes)
    for _ in range(12):
        method = data.draw(st.sampled_from(REQ_METHODS))
        host = data.draw(st.sampled_from(REQ_HOSTS))
        path = data.draw(paths)
        expected = ref.match(method, host, path)
        event("outcome %d" % expected[0])
        assert router.match(method, host, path) == expected, (method, host, path, routes)


HOST_ROUTES = [
    route("exact", ["/h"], hosts=["ab.a.com"]),
    route("wild", ["/h"], hosts=["*.a.com"]),
    route("wild2", ["/h"], hosts=["*.b.a.com"], methods=["GET"]),
    route("v6", ["/h"], hosts=["[::1]"], methods=["POST"]),
    route("any", ["/h"], methods=["PUT"]),
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"B", b"b", b".", b":", b"[", b"]", b"1", b"com", b"::",
                                 b"\xc1", b" "]), max_size=10).map(b"".join),
       st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD"]))
def test_host_parsing_matches_reference(host, method):
    router = Router(HOST_ROUTES)
    assert router.match(method, host, b"/h") == Reference(HOST_ROUTES).match(method, host, b"/h")
