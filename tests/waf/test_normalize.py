"""The WAF's transformations (fastgate._core.wafdecode and the detectors' own views)."""
import pytest

from fastgate._core.wafdecode import decode, fast_view
from fastgate.waf.cmdi import _deobfuscate
from fastgate.waf.extra import resolve_lookups
from fastgate.waf.traversal import normalize_path


@pytest.mark.parametrize("raw, out", [
    (b"%3Cscript%3E", b"<script>"),
    (b"%253Cscript%253E", b"<script>"),                 # double encoding
    (b"%25253C", b"<"),                                 # triple
    (b"%u003cscript%u003e", b"<script>"),               # IIS %u
    (b"%uff1cscript%uff1e", b"<script>"),               # %u full-width
    (b"&lt;img&gt;", b"<img>"),
    (b"&#60;&#x3C;&#X3c;&#0060", b"<<<<"),              # numeric, with and without ';'
    (b"&amp;lt;b&amp;gt;", b"<b>"),                     # entity of an entity
    (b"ja&Tab;vascript&colon;", b"ja\tvascript:"),      # HTML5 names
    (b"%26lt%3B", b"<"),                                # URL-encoded entity
    (b"\\u003cb\\u003e", b"<b>"),                       # JS/JSON \u
    (b"\\x3cb\\x3e", b"<b>"),                           # JS \x
    (b"\\u{61}lert", b"alert"),                         # ES6 \u{}
    (b"a\\nb", b"a\nb"),
    (b"se%00lect", b"select"),                          # NUL removal
    (b"se\x00lect", b"select"),
    (b"%c0%ae%c0%ae%c0%af", b"../"),                    # overlong UTF-8
    (b"\xc0\xae\xc0\xae/", b"../"),
    (b"\xe0\x80\xae", b"."),                            # 3-byte overlong
    (b"\xef\xbc\x9cscript\xef\xbc\x9e", b"<script>"),   # full-width forms
    (b"caf\xc3\xa9", b"caf\xc3\xa9"),                   # real UTF-8 untouched
    (b"\xf0\x9f\x98\x80 ok", b"\xf0\x9f\x98\x80 ok"),     # and four-byte characters
    (b"%%32%65%%32%65%%32%66etc", b"../etc"),            # "%" then escapes of "2e": another round
    (b"%2%65%2%65/x", b"../x"),                          # half a nibble encoded
    (b"100%% pure", b"100%% pure"),                      # a literal '%' alone stays
    (b"..%c0%2fetc%c0%2fpasswd", b"../etc/passwd"),      # a lead byte never UTF-8, before ASCII
    (b"%uff0e%uff0e%u2215etc%u2215passwd", b"../etc/passwd"),   # full-width dots, division slash
    (b"..%u2216..%u2216boot.ini", b"..\\..\\boot.ini"),      # set minus as a backslash
    (b"%2e.%f0%80%80%afboot.ini", b"../boot.ini"),       # four-byte overlong
    (b"%f8%80%80%80%ae%f8%80%80%80%ae/x", b"../x"),      # five-byte overlong
    (b"..%c1%1c..%c1%1cboot.ini", b"..\\..\\boot.ini"),    # IIS: continuation's top bits ignored
    (b"%2e.%uF025%2e.%uEFC8x", b"../../x"),              # the private-use slashes of dotdotpwn
])
def test_decode(raw, out):
    assert decode(raw) == out


@pytest.mark.parametrize("raw", [b"%", b"%2", b"%zz", b"%u12", b"&#", b"&#x;", b"&bogus;", b"\\", b"\\u12",
                                 b"\\x4", b"100%", b"a&b=c", b"\xc0", b"\xff\xfe", b"&" * 50, b"%25" * 100])
def test_decode_malformed_is_kept_and_bounded(raw):
    out = decode(raw)
    assert isinstance(out, bytes) and len(out) <= len(raw)


def test_decode_keeps_lone_escapes_and_legacy_entities():
    assert decode(b"&per_page=2&sort=x") == b"&per_page=2&sort=x"   # no entity without ';'
    assert decode(b"&ltscript") == b"<script"                       # legacy names need no ';'
    assert decode(b"&colonx") == b"&colonx"                         # HTML5 names do
    # each legacy name in any case, the longest first, as a prefix of a longer word too
    for raw, out in ((b"&LTb&GT", b"<b>"), (b"&quotx", b'"x'), (b"&AposB", b"'B"),
                     (b"&nbspx", b" x"), (b"&ampx", b"&x"), (b"&amplt", b"<"), (b"&lang=en", b"&lang=en"),
                     (b"&g", b"&g"), (b"&apo", b"&apo"), (b"&gtx&lt", b">x<")):
        assert decode(raw) == out, raw


def test_fast_view_layout_and_skips():
    v = fast_view(b"/a?x=%3c", [(b"host", b"h"), (b"content-length", b"3"), (b"authorization", b"Bearer abc.def-ghi"),
                                (b"user-agent", b"%2e%2e")], b"b\\u003c", frozenset([b"content-length"]), 100)
    assert v == b"/a?x=<\x02h\x02..\x01b<"          # the token-shaped credential is left out
    assert fast_view(b"/", [], b"x" * 50, frozenset(), 10) == b"/\x01" + b"x" * 10
    clean = {b"h": True}
    assert fast_view(b"/", [(b"host", b"h")], None, frozenset(), 10, clean) == b"/\x01"


def test_fast_view_keeps_suspicious_credentials():
    v = fast_view(b"/", [(b"authorization", b"Bearer ' or 1=1--")], None, frozenset(), 10)
    assert b"or 1=1" in v
    v = fast_view(b"/", [(b"x-request-id", b"../../etc/passwd")], None, frozenset(), 10)
    assert b"etc/passwd" in v


@pytest.mark.parametrize("raw, out", [
    ("..\\..\\windows\\win.ini", "../../windows/win.ini"),
    ("..;/..;/etc/passwd", "../../etc/passwd"),
    ("a//b///c", "a/b/c"),
])
def test_normalize_path(raw, out):
    assert normalize_path(raw) == out


@pytest.mark.parametrize("raw, out", [
    ("w'h'o'am'i", "whoami"), ('c"a"t /etc/passwd', "cat /etc/passwd"), ("\\l\\s", "ls"),
    ("cat${ifs}/etc/passwd", "cat /etc/passwd"), ("cat$ifs$9/etc/passwd", "cat /etc/passwd"),
    ("who$@ami", "whoami"), ("{cat,/etc/passwd}", " cat /etc/passwd "),
])
def test_cmd_deobfuscate(raw, out):
    assert _deobfuscate(raw) == out


@pytest.mark.parametrize("raw", ["${${lower:j}ndi:ldap://x/a}", "${${::-j}${::-n}${::-d}${::-i}:rmi://x}",
                                 "${${env:nope:-j}ndi:dns://x}", "${${upper:j}${upper:n}di:ldap://x}",
                                 "${${date:'j'}ndi:ldap://x}"])
def test_log4j_lookups_resolve(raw):
    assert resolve_lookups(raw.lower()).startswith("${jndi:") or "${jndi:" in resolve_lookups(raw.lower())
