"""The inspection engine: ``Engine(rules, exclude_args, exclude_headers).inspect(...)``.

Two stages. The fast path decodes the whole request into one buffer (Cython,
fastgate._core.wafdecode.fast_view) and runs one Hyperscan scan over it; a benign request
ends there. When a pattern matches, the request is split into parts (fastgate.waf.parts),
each part decoded and scanned on its own, and only the rule classes whose patterns matched that
part run their precise detector on it (tokenizers and structural checks in sqli, xss,
traversal, cmdi, extra). The first detector that fires gives the Match.

Bounds: the body is cut at ``inspect_body_bytes``; a part longer than ``SMALL`` bytes is
judged in windows around every one of its prefilter matches; the precise
stage judges at most ``precise_budget`` bytes per request. A request that exhausts the budget
with suspicious parts left unjudged passes (``on_budget="pass"``, the default, like
ModSecurity's ProcessPartial) or is blocked (``on_budget="block"``: padding is then no
bypass, at the price of blocking huge prose bodies).

Time: ``inspect`` judges a request whole, synchronously (tools and tests). The gateway calls
``start``, which returns the verdict or, when the precise stage has run ``DEADLINE_S`` (0.8
ms), a ``Judgement`` to ``resume()`` on a later turn of the event loop: the loop is never held
1 ms, and the verdict never depends on how busy the machine is (an early version passed
what it had not finished judging in time, and 50 benign-looking values in front of an
attack were a bypass). Neither raises: an internal error returns
``Match("waf_error", "engine")`` (fail closed).
"""
from __future__ import annotations

from itertools import zip_longest
from time import perf_counter

from fastgate._core.wafdecode import decode, fast_view, remember_clean
from fastgate.waf import cmdi, extra, sqli, traversal, xss
from fastgate.waf.parts import FRAMING_HEADERS, iter_parts
from fastgate.waf.prefilter import Prefilter
from fastgate.waf.verdict import Judgement, Match

__all__ = ("Engine", "Judgement", "Match", "RULES", "DEFAULT_RULES")

DEFAULT_RULES = ("sqli", "xss", "path_traversal", "command_injection")
RULES = DEFAULT_RULES + ("rfi", "php", "java")
# Order of judgement within a part (attribution only: any match blocks).
_ORDER = ("path_traversal", "java", "command_injection", "sqli", "xss", "php", "rfi")
_DETECTORS = {
    "sqli": sqli.detect, "xss": xss.detect, "path_traversal": traversal.detect,
    "command_injection": cmdi.detect, "rfi": extra.detect_rfi, "php": extra.detect_php,
    "java": extra.detect_java,
}
SMALL = 512          # values up to this size are judged whole
BEFORE, AFTER = 320, 160   # a window around a prefilter match in a longer value
WMAX = 2 * (BEFORE + AFTER)   # merged windows longer than this are judged in overlapping pieces
CLEAN_MAX_ENTRIES, CLEAN_MAX_LEN = 4096, 512   # bounds of each table of parts judged clean
DEADLINE_S = 0.0008  # a slice of the precise stage (the loop is not held 1 ms)
# Samples that take every detector through its regexes once, so that no request pays for
# compiling them (Engine.__init__ runs them: "warm before the swap").
_WARM = (
    b"/w?a=1%27%20or%201=1--&b=%3Cscript%3Ealert(1)%3C/script%3E&c=..%2f..%2fetc%2fpasswd"
    b"&d=;cat%20/etc/passwd&e=$(id)&f=%60id%60&g=for%20%25a%20in%20(x)%20do%20y&h=if%20exist%20x"
    b"&i=${jndi:ldap://x/a}&j=php://filter&k=http://1.2.3.4/x?&l=/e?c/p?sswd&m={cat,/etc/passwd}"
    b"&n=select%20a%20from%20b&o=javascript:alert(1)&p=%22%20onmouseover=x()&q=union%20select"
)


class Engine:
    __slots__ = ("rules", "_pf", "_skip", "_exclude_args", "_exclude_headers", "_body_limit",
                 "_order", "_budget", "_detail", "_clean", "_judged", "_on_budget")

    def __init__(self, rules=DEFAULT_RULES, exclude_args=(), exclude_headers=(),
                 inspect_body_bytes: int = 65536, precise_budget: int = 32768,
                 on_budget: str = "pass"):
        rules = tuple(dict.fromkeys(rules))
        unknown = [r for r in rules if r not in _DETECTORS]
        if unknown or not rules:
            raise ValueError(f"unknown or no WAF rules: {unknown or rules}")
        self.rules = rules
        self._order = tuple(r for r in _ORDER if r in rules)
        self._pf = Prefilter(self._order)
        self._exclude_args = frozenset(a.lower() for a in exclude_args)
        self._exclude_headers = frozenset(
            (h.lower().encode("latin-1") if isinstance(h, str) else h.lower()) for h in exclude_headers)
        self._skip = frozenset(FRAMING_HEADERS | self._exclude_headers)
        self._body_limit = int(inspect_body_bytes)
        self._budget = int(precise_budget)
        if on_budget not in ("block", "pass"):
            raise ValueError("on_budget must be 'block' or 'pass'")
        self._on_budget = on_budget
        self._detail = None
        # Header values seen clean before (User-Agent, Accept... repeat across requests):
        # bounded, cleared when full; a clean verdict depends only on the value's bytes.
        self._clean = {}
        # Parts the precise stage judged clean, per kind (``header`` is ``_clean``).
        self._judged = {"header": self._clean}
        self._warm()

    def _warm(self) -> None:
        for text in _WARM.decode().split("&"):
            t = decode(text.encode()).decode("latin-1").lower()
            for det in _DETECTORS.values():
                for kind in ("value", "name", "header", "path", "filename", "jsonkey"):
                    det(t, kind)
        self.inspect(b"GET", _WARM, [(b"user-agent", b"warm; x")], b'{"a": "b c"}', b"application/json")

    def inspect(self, method: bytes, raw_target: bytes, headers, body, content_type) -> Match | None:
        """None, or the Match of the first part a detector judges an attack (judged whole,
        however long it takes)."""
        r = self.start(method, raw_target, headers, body, content_type)
        while r.__class__ is Judgement:
            r = r.resume()
        return r

    def start(self, method: bytes, raw_target: bytes, headers, body, content_type):
        """None, a Match, or a Judgement still under way after ``DEADLINE_S``."""
        began = perf_counter()
        try:
            if type(headers) is not list:
                headers = list(headers)
            view = fast_view(raw_target, headers, body, self._skip, self._body_limit, self._clean)
            if not self._pf.any(view):
                remember_clean(headers, self._skip, self._clean)
                return None
        except Exception:  # noqa: BLE001 - a WAF must answer; a bug fails closed
            return Match("waf_error", "engine")
        return self.judge(raw_target, headers, body, content_type, began)

    def judge(self, raw_target: bytes, headers: list, body, content_type, began=None):
        """``start`` for a request the fast path flagged: the precise stage."""
        try:
            if began is None:
                began = perf_counter()
            return Judgement(self._precise(raw_target, headers, body, content_type,
                                           began + DEADLINE_S)).resume()
        except Exception:  # noqa: BLE001 - a WAF must answer; a bug fails closed
            return Match("waf_error", "engine")

    def fast_path(self):
        """What the compiled phases (fastgate._core.wafcore) scan with: the prefilter's
        stop-at-first-match scan and its flag, the headers never inspected, the table of
        header values found clean, and the body limit."""
        scan, hit = self._pf.any_scanner()
        return scan, hit, self._skip, self._clean, self._body_limit

    def explain(self, method, raw_target, headers, body, content_type):
        """(Match or None, detector rule name): what inspect decided and which check fired."""
        self._detail = None
        m = self.inspect(method, raw_target, headers, body, content_type)
        return m, self._detail

    def _precise(self, raw_target, headers, body, content_type, deadline):
        """The precise stage as a generator: it yields each time it has run ``DEADLINE_S``
        and returns the verdict (Judgement drives it)."""
        budget = self._budget
        pf = self._pf
        judged = self._judged
        for name, kind, raw in iter_parts(raw_target, headers, body, content_type,
                                          self._exclude_args, self._exclude_headers, self._body_limit):
            if perf_counter() > deadline:
                yield
                deadline = perf_counter() + DEADLINE_S
            if kind == "header" and "filename" in name:
                kind = "filename"
            seen = judged.get(kind)
            if seen is None:
                seen = judged[kind] = {}
            elif raw in seen:
                continue            # judged clean before, as this kind of part
            v = decode(raw)
            whole = len(v) <= SMALL
            if whole:
                classes = pf.classes(v)
                if not classes:
                    _remember(seen, raw)
                    continue
                text = v.decode("latin-1").lower()
                jobs = [(cls, text) for cls in classes]
            else:
                # A long value: judge windows around the prefilter's matches, not the whole.
                # Every match gets its window (the byte budget bounds the work): a value
                # padded with harmless matches must not hide an attack after them.
                hits = pf.offsets(v)
                if hits is None:    # matches too dense to list: more than the budget judges
                    return self._exhausted(name, None)
                if not hits:
                    continue
                text = v.decode("latin-1").lower()
                per = [[(cls, w) for w in _windows(text, hits[cls])] for cls in self._order if cls in hits]
                jobs = [job for group in zip_longest(*per) for job in group if job is not None]
            for cls, t in jobs:
                if budget <= 0:
                    return self._exhausted(name, cls)
                if perf_counter() > deadline:
                    yield
                    deadline = perf_counter() + DEADLINE_S
                budget -= len(t)
                why = _DETECTORS[cls](t, kind)
                if why:
                    self._detail = (why, t[:300])
                    return Match(cls, name)
            if whole:
                # judged whole and clean: the next request with this value in this kind of
                # part skips it (browsers repeat sec-ch-ua and etags; JSON keys, argument
                # names and enum-like values repeat across every client)
                _remember(seen, raw)
        return None

    def _exhausted(self, part, cls):
        """The precise stage ran out of its byte budget with parts still to judge."""
        self._detail = ("budget", "")
        if self._on_budget == "pass":
            return None
        return Match(cls or self._order[0], part)


def _remember(seen: dict, raw) -> None:
    """A part judged clean is kept in its kind's bounded table (a verdict depends only on the
    part's bytes and kind). The ``header`` table is also the one fast_view skips values of."""
    if len(raw) <= CLEAN_MAX_LEN:
        if len(seen) >= CLEAN_MAX_ENTRIES:
            seen.clear()
        seen[raw] = True


def _windows(text: str, ends) -> list:
    """Merged windows around match ends, each at most ``WMAX`` long (a longer run is cut in
    pieces overlapping by ``BEFORE``); one not at the value's start begins with a marker so
    that start-of-value rules do not take it for the value's start."""
    spans = []
    a0 = b0 = -1
    for e in ends:
        a, b = max(0, e - BEFORE), min(len(text), e + AFTER)
        if a0 >= 0 and a <= b0:
            b0 = max(b0, b)
            continue
        if a0 >= 0:
            spans.append((a0, b0))
        a0, b0 = a, b
    if a0 >= 0:
        spans.append((a0, b0))
    out = []
    for a, b in spans:
        while b - a > WMAX:
            out.append((a, a + WMAX))
            a += WMAX - BEFORE
        out.append((a, b))
    return [text[a:b] if a == 0 else "\x03 " + text[a:b] for a, b in out]
