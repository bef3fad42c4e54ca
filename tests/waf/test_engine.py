"""Engine API: Match and part names, excludes, body kinds, and fuzz safety (never raises)."""
import json
import random

import pytest
from hypothesis import given, settings, strategies as st

from fastgate.waf import DEFAULT_RULES, RULES, Engine, Match

H = [(b"host", b"api.example.com:8443"), (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0"),
     (b"accept", b"*/*")]


@pytest.fixture(scope="module")
def engine():
    return Engine(rules=RULES)


def test_benign_passes(engine):
    body = json.dumps({"name": "Seán O'Brien", "note": "select a color; 1 or 2 items"}).encode()
    assert engine.inspect(b"POST", b"/api/orders?q=union+station", H, body, b"application/json") is None


@pytest.mark.parametrize("target, headers, body, ctype, part, rule", [
    (b"/a?id=1%27%20or%20%271%27=%271", [], None, None, "args:id", "sqli"),
    (b"/a?%3Cscript%3E=1", [], None, None, "args_names", "xss"),
    # a value's end inside the fast path's one buffer: the next argument, or a header
    (b"/a?id=select%20pg_sleep&b=2", [], None, None, "args:id", "sqli"),
    (b"/a?id=select%20pg_sleep", [(b"accept", b"*/*")], None, None, "args:id", "sqli"),
    (b"/a/..%2f..%2f..%2fetc%2fpasswd", [], None, None, "path", "path_traversal"),
    (b"/a", [(b"x-custom", b"; cat /etc/shadow")], None, None, "headers:x-custom", "path_traversal"),
    (b"/a", [(b"x-forwarded-host", b"x`id`")], None, None, "headers:x-forwarded-host", "command_injection"),
    (b"/a", [(b"user-agent", b"${jndi:ldap://x/a}")], None, None, "headers:user-agent", "java"),
    (b"/a", [(b"cookie", b"a=1; session=<script>alert(1)</script>")], None, None, "cookies:session", "xss"),
    (b"/a", [], b'{"user": {"name": "x\' or 1=1--"}}', b"application/json", "body:json:user.name", "sqli"),
    (b"/a", [], b'{"<script>": 1}', b"application/json", "body:json_keys:$", "xss"),
    (b"/a", [], b"comment=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E", b"application/x-www-form-urlencoded",
     "body:form:comment", "xss"),
    (b"/a", [], b'--XX\r\nContent-Disposition: form-data; name="notes"\r\n\r\n; ls -la /\r\n--XX--\r\n',
     b"multipart/form-data; boundary=XX", "body:multipart:notes", "command_injection"),
    (b"/a", [], b'--XX\r\nContent-Disposition: form-data; name="f"; filename="../../x.php"\r\n'
     b'Content-Type: image/png\r\n\r\n\x89PNG\r\n--XX--\r\n', b"multipart/form-data; boundary=XX",
     "body:multipart_filename:f", "path_traversal"),
    (b"/a", [], b'<r><a x="1 union select password from users"/></r>', b"application/xml", "body:xml", "sqli"),
    (b"/a", [], b"{not json ' or 1=1 --", b"application/json", "body", "sqli"),
])
def test_match_names_the_part(engine, target, headers, body, ctype, part, rule):
    m = engine.inspect(b"POST", target, H + headers, body, ctype)
    assert m == Match(rule, part)


@pytest.mark.parametrize("payload, rule", [
    # public payload lists (PayloadsAllTheThings' intruder files) the engine once let through:
    # the fast path must flag each as the detectors judge it, in a query and in a JSON body
    ("' or true--", "sqli"), (" ORDER BY 30-- ", "sqli"), (" AS INJECTX WHERE 1=1 AND 1=1--", "sqli"),
    (" AND 5650=CONVERT(INT,(UNION ALL SELECTCHAR(88)))-- ", "sqli"),
    ("abc') OR NOT 9711=9711  AND ('ykos'='ykos", "sqli"), ("(1810=1810)*8386", "sqli"),
    ("1 ;CALL REGEXP_SUBSTRING(REPEAT(RIGHT(CHAR(3843),0),500000000),NULL) -- -", "sqli"),
    ("<x onxxx=1", "xss"),
    ("%%32%65%%32%65%%32%66%%32%65%%32%65%%32%66etc%%32%66passwd", "path_traversal"),
    ("..%c0%2f..%c0%2fetc%c0%2fpasswd", "path_traversal"),
    ("%uff0e%uff0e%u2215%uff0e%uff0e%u2215etc%u2215passwd", "path_traversal"),
    ("%5C..%c1%1c..%c1%1cetc%c1%1cpasswd", "path_traversal"),
    ("; sleep 15", "command_injection"), ("dir C:\\", "command_injection"),
    ("net user hacker Password1 /ADD", "command_injection"),
    ("| system('sleep 5');", "command_injection"),
    ('reg add "HKLM\\Software\\x" /v y /f', "command_injection"),
])
def test_payload_lists_through_the_fast_path(payload, rule):
    from urllib.parse import quote
    e = Engine()
    m = e.inspect(b"GET", b"/search?q=" + quote(payload, safe="%").encode(), H, None, None)
    assert m is not None and m.rule == rule and m.part == "args:q", (payload, m)
    body = json.dumps({"q": payload}).encode()
    m = Engine().inspect(b"POST", b"/api", H, body, b"application/json")
    assert m is not None and m.rule == rule, (payload, m)


def test_part_never_holds_the_payload(engine):
    m = engine.inspect(b"GET", b"/a?%27%20or%201=1--=x", H, None, None)
    assert m is not None and "or" not in m.part
    m = engine.inspect(b"POST", b"/a", H, b'{"\' or 1=1--": {"x": "<script>alert(1)</script>"}}', b"application/json")
    assert m is not None and "script" not in m.part and "or 1" not in m.part


def test_rules_and_excludes():
    e = Engine(rules=("xss",), exclude_args=("comment",), exclude_headers=("x-raw-html",))
    assert e.inspect(b"GET", b"/a?id=1%27%20or%201=1--", H, None, None) is None        # sqli off
    assert e.inspect(b"GET", b"/a?comment=<script>alert(1)</script>", H, None, None) is None
    assert e.inspect(b"GET", b"/a", H + [(b"x-raw-html", b"<script>x</script>")], None, None) is None
    assert e.inspect(b"GET", b"/a?other=<script>alert(1)</script>", H, None, None) == Match("xss", "args:other")
    with pytest.raises(ValueError):
        Engine(rules=("nope",))
    assert Engine().rules == DEFAULT_RULES


def test_body_limit_is_respected():
    e = Engine(inspect_body_bytes=100)
    body = b"a=" + b"x" * 200 + b"&b=<script>alert(1)</script>"
    assert e.inspect(b"POST", b"/", H, body, b"application/x-www-form-urlencoded") is None


def test_header_clean_cache_does_not_hide_attacks(engine):
    for _ in range(3):
        assert engine.inspect(b"GET", b"/", H, None, None) is None
    assert engine.inspect(b"GET", b"/", H + [(b"referer", b"x' or '1'='1")], None, None) is not None



def test_header_values_judged_clean_are_remembered():
    """A header value the precise stage judged clean (a browser's sec-ch-ua ends with a
    quote: the prefilter flags it) is left out of later requests' scans, so a browser's
    every request does not pay for the precise stage."""
    e = Engine()
    ua = b'"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"'
    assert e._pf.any(ua)
    hs = H + [(b"sec-ch-ua", ua)]
    e.explain(b"GET", b"/", hs, None, None)
    assert ua in e._clean
    # the same value in a filename header is a filename there, still judged
    m = e.inspect(b"GET", b"/", [(b"x-filename", b"../../../../etc/passwd")], None, None)
    assert m is not None and m.rule == "path_traversal"


def test_parts_judged_clean_are_remembered_per_kind():
    """The precise stage keeps parts it judged clean per kind (a verdict depends only on the
    bytes and the kind of part): the same bytes as another kind are judged again."""
    e = Engine()
    body = b'{"comment": "meet me at Union Station"}'      # "union": the prefilter flags it
    assert e._pf.any(body)
    assert e.inspect(b"POST", b"/", [], body, b"application/json") is None
    assert b"meet me at Union Station" in e._judged["value"]
    assert b"comment" in e._judged["jsonkey"]
    # bytes clean as a JSON value are still judged as a header (start-of-value rules differ)
    m = e.inspect(b"GET", b"/", [(b"x-a", b"x' or '1'='1")], None, None)
    assert m is not None and m.rule == "sqli"
    assert e.inspect(b"POST", b"/", [], b'{"q": "x\' or \'1\'=\'1"}', b"application/json") is not None


@pytest.mark.parametrize("ua", [b"ansible-config dump", b"time ifconfig", b"chef-vault -i secret"])
def test_a_command_line_header_is_judged_alone_or_not(ua):
    """A header value that is a command line: the verdict is the same whether or not
    something else in the request is flagged (the fast path once never flagged it alone),
    and the same on a second request (the clean table holds only what was judged clean)."""
    e = Engine()
    alone = e.inspect(b"GET", b"/", [(b"user-agent", ua)], None, None)
    flagged = e.inspect(b"GET", b"/?q=union+station", [(b"user-agent", ua)], None, None)
    again = e.inspect(b"GET", b"/", [(b"user-agent", ua)], None, None)
    assert alone is not None and alone.rule == "command_injection"
    assert flagged == alone == again


def test_token_headers_left_out_of_the_scan_are_not_taken_for_clean():
    """fast_view leaves token-shaped credentials out of its scan; a request that passed
    that way must not whitelist them for the precise stage of the next one."""
    e = Engine()
    token = b"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0onload=.abc"
    hs = H + [(b"authorization", token)]
    assert e.inspect(b"GET", b"/", hs, None, None) is None     # the fast path: token skipped
    assert token not in e._clean
    assert H[1][1] in e._clean                                  # the scanned ones are kept

@pytest.mark.parametrize("payload", [
    b"%", b"%%%%", b"%zz%u12%uZZZZ", b"&#x110000000;&#99999999999;", b"\\u{FFFFFFFFF}\\uD800",
    b"\xff\xfe\xc0\xc1\xe0\x80", b"\x00" * 100, b"{" * 5000, b"[" * 100000, b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b"'" * 10000, b"<" * 10000, b"/*" * 10000, b"${" * 5000, b"../" * 20000, b"a=" + b"%25" * 20000,
])
def test_malformed_never_raises(engine, payload):
    for ctype in (None, b"application/json", b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=",
                  b"multipart/form-data; boundary=x", b"text/xml"):
        m = engine.inspect(b"POST", b"/x?" + payload[:2000], H + [(b"x-a", payload[:4000])], payload, ctype)
        assert m is None or isinstance(m, Match)
        assert m is None or m.rule != "waf_error"


def test_deep_json_is_bounded(engine):
    deep = b'{"a":' * 200 + b'"<script>alert(1)</script>"' + b"}" * 200
    m = engine.inspect(b"POST", b"/", H, deep, b"application/json")
    assert m is None or isinstance(m, Match)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.binary(max_size=600))
def test_fuzz_never_raises(target, header, body):
    e = _FUZZ_ENGINE
    for ctype in (None, b"application/json", b"multipart/form-data; boundary=a", b"application/xml"):
        m = e.inspect(b"POST", b"/" + target, [(b"x-f", header), (b"cookie", header)], body, ctype)
        assert m is None or (isinstance(m, Match) and m.rule != "waf_error")


_FUZZ_ENGINE = Engine(rules=RULES)


def test_random_mutations_of_attacks_never_raise(engine):
    rng = random.Random(5)
    seeds = [b"1' or '1'='1", b"<script>alert(1)</script>", b"../../etc/passwd", b";cat /etc/passwd", b"${jndi:x}"]
    for _ in range(300):
        s = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            s[rng.randrange(len(s))] = rng.randrange(256)
        m = engine.inspect(b"GET", b"/?a=" + bytes(s), H, bytes(s), b"application/json")
        assert m is None or (isinstance(m, Match) and m.rule != "waf_error")


def _padded_values(n):
    """n distinct values the prefilter flags and the detectors clear, then an attack."""
    doc = {f"k{i}": f"meet me at union station, platform {i}, or call me" for i in range(n)}
    doc["zz"] = "x' UNION SELECT password FROM users--"
    return json.dumps(doc).encode()


def _padded_value(n):
    """One long value: n harmless prefilter matches, then an attack."""
    text = " ".join(f"we met at union station number {i} and the weather was fine"
                    for i in range(n))
    return json.dumps({"note": text + " x' UNION SELECT password FROM users--"}).encode()


@pytest.mark.parametrize("body", [_padded_values(60), _padded_values(600), _padded_value(20),
                                  _padded_value(200)],
                         ids=["60 values", "600 values", "value with 20 matches",
                              "value with 200 matches"])
def test_padding_is_no_bypass(blocking, body):
    """Harmless-looking matches in front of an attack, as many values or inside one long
    value: the attack is still judged (an early version stopped judging after 0.9 ms, and
    after 8 windows of a long value, and let the rest through)."""
    m = blocking.inspect(b"POST", b"/", [], body, b"application/json")
    assert m is not None and m.rule == "sqli" and m.part == ("body:json:zz" if b'"zz"' in body
                                                             else "body:json:note")


@pytest.fixture(scope="module")
def blocking():
    return Engine(on_budget="block")


def test_long_judgements_are_resumed_not_cut(monkeypatch, blocking):
    """start() hands back a Judgement when the precise stage runs past its slice; resuming
    it to the end gives the same verdict as inspect(), and the clean case stays clean.
    (The slice is set to nothing here: every part is a slice, whatever the machine.)"""
    from fastgate.waf import engine as engine_mod
    from fastgate.waf.engine import Judgement
    e = blocking
    monkeypatch.setattr(engine_mod, "DEADLINE_S", -1.0)
    body = _padded_values(600)
    r = e.start(b"POST", b"/", [], body, b"application/json")
    assert isinstance(r, Judgement)
    while isinstance(r, Judgement):
        r = r.resume()
    assert r == e.inspect(b"POST", b"/", [], body, b"application/json")
    clean = json.dumps({f"k{i}": f"union station platform {i}" for i in range(600)}).encode()
    r = e.start(b"POST", b"/", [], clean, b"application/json")
    while isinstance(r, Judgement):
        r = r.resume()
    assert r is None


def test_matches_too_dense_to_list_fail_closed(blocking, engine):
    m, why = blocking.explain(b"POST", b"/", [], json.dumps({"note": "-- " * 20000}).encode(),
                       b"application/json")
    assert m is not None and why[0] == "budget"
    assert engine.inspect(
        b"POST", b"/", [], json.dumps({"note": "-- " * 20000}).encode(), b"application/json") is None


def test_fast_forms_are_supersets():
    """A pattern the fast path's database holds in a cheaper form (prefilter.FAST_FORMS)
    still flags everything the pattern itself matches."""
    import re
    from fastgate.waf.prefilter import FAST_FORMS
    samples = [b"if a==b", b"IF x == y", b"if" + b" " * 60 + b"==", b"if (x) ==", b"xif a==b",
               b"if\na==b", b"if " + b"y" * 200 + b"==", b"a == b if c", b"if%==%", b"elif a==b"]
    rng = random.Random(5)
    for _ in range(2000):
        samples.append(bytes(rng.choice(b"if =\n(x)a%") for _ in range(rng.randint(1, 80))))
    for pattern, fast in FAST_FORMS.items():
        p = re.compile(pattern.encode("latin-1"), re.I | re.S)
        f = re.compile(fast.encode("latin-1"), re.I | re.S)
        for s in samples:
            if p.search(s):
                assert f.search(s), (pattern, s)


def test_part_names_are_remembered_within_bounds():
    from fastgate.waf import parts
    for i in range(5000):
        assert parts.safe_name(b"key%d" % i) == "key%d" % i
        assert len(parts._NAMES) <= 4096
    assert parts.safe_name(b"x' or 1=1") == "*" and parts.safe_name(b"x' or 1=1") == "*"
    assert parts.safe_name(b"a" * 65) == "*" and parts.safe_name(b"items[0].sku") == "items[0].sku"
