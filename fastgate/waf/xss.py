"""Cross-site scripting: markup that runs script, attribute break-outs, script URLs, JS sinks.

Judged on the decoded, lower-cased value. Markup a rich-text field legitimately carries
(``<b>``, ``<p>``, ``<a href="https://...">``, ``<img src=...>``) passes; what fires is
structure a browser would execute: a script-capable element (``<script``, ``<svg``,
``<iframe``, ``<object`` ...), any element with an event handler or a script URL in an
attribute, a closing tag that breaks out of a raw-text element (``</script>``, ``</title>``),
an attribute break-out (``" onmouseover=``), a ``javascript:`` URL followed by code, and the
sinks and obfuscations (``alert(``, ``document.cookie``, ``self["alert"]``, JSFuck, tagged
templates, CSS ``expression(``) that only script has reason to contain.

Every regex is linear: no nested quantifiers, bounded repetitions, input bounded by the caller.
"""
from __future__ import annotations

import re

__all__ = ("detect",)

_EVENTS = (
    "load|unload|beforeunload|error|abort|click|dblclick|auxclick|contextmenu|mouse\\w{2,12}|"
    "pointer\\w{2,12}|touch\\w{3,8}|key(?:down|up|press)|focus(?:in|out)?|blur|change|input|"
    "submit|reset|select(?:start|ionchange)?|drag\\w{0,6}|drop|copy|cut|paste|scroll\\w{0,3}|"
    "wheel|resize|toggle|show|hashchange|popstate|pageshow|pagehide|message|storage|"
    "animation\\w{3,10}|transition\\w{3,6}|play(?:ing)?|pause|ended|canplay\\w{0,7}|"
    "loadstart|loadeddata|loadedmetadata|load\\w{2,10}|progress|readystatechange|begin|end|"
    "finish|bounce|start|beforeprint|afterprint|search|invalid|webkit\\w{3,40}|moz\\w{3,30}|"
    "ms\\w{3,30}|zoom|formdata|securitypolicyviolation|beforeinput|activate|beforeactivate|"
    "deactivate|filterchange|propertychange|online|offline|help|seek\\w{2,3}|durationchange|"
    "emptied|stalled|suspend|timeupdate|volumechange|waiting|ratechange|cuechange|"
    "fullscreen\\w{4,6}|visibilitychange|beforecopy|beforecut|beforepaste|datasetchanged|"
    "rowenter|rowexit|layoutcomplete|losecapture|move\\w{0,5}|repeat|reverse|urlflip|"
    "beforeeditfocus|controlselect|errorupdate|pointerlockchange|gotpointercapture|"
    "lostpointercapture|close|cancel|open|beforetoggle|scrollend|contentvisibilityautostatechange"
)
# An event handler attribute: after a tag's name or another attribute, or after a quote that
# closes an attribute value. Names outside the list count after a quote or a slash only.
_HANDLER = re.compile(r"(?:^|[\s\"'`/;,(+=*])on(?:" + _EVENTS + r")\s*=")
# Inside a tag, any on* attribute counts, known to browsers or not (<x onxxx=1 probes which
# handlers a filter knows; the next browser may know more).
_ANY_HANDLER = re.compile(r"^(?:[^>]*?[\s/\"'])?on[a-z]{3,40}\s*=")
_HANDLER_AFTER_BREAK = re.compile(r"[\"'`/]\s*on[a-z]{3,40}\s*=")
_HANDLER_CALL = re.compile(r"(?:^|[\s\"'`/;,(])on[a-z]{3,40}\s*=\s*[\"'`]?\s*[\w$.\[\]]{1,40}\s*[(`]")

# Elements that run script, load a document, or change how the page is parsed.
_BAD_TAGS = {
    "script", "iframe", "frame", "frameset", "object", "embed", "applet", "svg", "math",
    "style", "link", "meta", "base", "form", "isindex", "marquee", "template", "noscript",
    "xmp", "plaintext", "video", "audio", "source", "track", "body", "html", "input", "button",
    "details", "dialog", "keygen", "bgsound", "layer", "ilayer", "xml", "import", "vmlframe",
    "handler", "listener", "animate", "set", "portal", "image", "select", "textarea", "option",
    "xss", "param", "comment", "blink", "discard", "foreignobject", "use", "animatemotion",
    "animatetransform", "mglyph", "annotation-xml", "head", "title", "xmlns",
}
_BREAKOUT_CLOSE = {"script", "style", "title", "textarea", "noscript", "template", "xmp",
                   "iframe", "noembed", "noframes", "plaintext", "svg", "math", "object",
                   "select", "option", "head", "html", "a"}
_TAG = re.compile(r"<\s{0,3}(/?)\s{0,3}:?([a-z][\w:.-]{0,40})")
_NS_SPACED = re.compile(r"<\s{0,3}[a-z]{1,12}\s{0,3}:\s{0,3}(?:script|vmlframe|svg|include|iframe|handler)\b")
_NAME_HANDLER = re.compile(r"^\s+on[a-z]{3,40}\s*=|^on[a-z]{3,40}\s*=\s*$")
_SPACED_TAG = re.compile(r"<\s{0,3}((?:[a-z]\s{1,3}){2,12}[a-z])\b")
_DANGEROUS_ATTR = re.compile(
    r"(?:^|[\s\"'/])(?:xmlns|xlink:href|formaction|srcdoc|pattern|xsi:schemalocation|"
    r"dynsrc|lowsrc|datasrc|datafld|behavior|autofocus)\s*="
)
_SCRIPT_URL_ATTR = re.compile(
    r"(?:href|src|action|data|code|codebase|background|poster|value|to|from|values|by|"
    r"content|url|icon|manifest|cite|longdesc|usemap|profile|classid|archive|xlink:href)"
    r"\s*=\s*[\"'`]?\s*(?:javascript|vbscript|livescript|mocha|data|jar|view-source):"
)
_MARKUP_SPECIAL = re.compile(
    r"<!--\s*#\s*(?:exec|include|echo|set|config|fsize|flastmod|printenv|if)\b|<!\s*entity\b|"
    r"<!\s*doctype\b[^>]{0,200}(?:\[|system|public)|<\?\s*(?:import|xml-stylesheet|php)\b|"
    r"<!\[cdata\[|<\?xml\b[^>]{0,200}\?>\s*<|!entity\s+%?\s*[\w.-]+\s+(?:system|public)\b|"
    r"<\s{0,3}import\w{0,30}\s*=|\bimplementation\s*="
)
# Script URL schemes, judged on a copy without whitespace/control characters (java&Tab;script).
_SCHEME = re.compile(
    r"(?:^|[^a-z0-9+.-])(?:javascript|livescript|mocha)\s*:\s*"
    r"(?:$|[\w$.]{1,60}\s*[(.=\[`]|[/'\"(`\\\[!+\-~{;<]|\w+\s*$)"
    r"|(?:^|[^a-z0-9+.-])vbscript\s*:\s*\S"
    r"|(?:^|[^a-z0-9+.-])data\s*:\s*(?:text/(?:html|javascript|xml|vbscript|x-scriptlet)|"
    r"image/svg\+xml|application/(?:x-)?(?:javascript|xhtml\+xml|ecmascript|xml)|[^,;\s]{0,40};base64,"
    r"\s*(?:pd|ph)|,\s*[<\w$]{1,40}\s*[(<]|,\s*<[a-z])"
)
_SINKS = re.compile(
    r"(?:^|[^\w$])(?:alert|prompt|confirm)\s*(?:\(|`|\.call|\.apply)"
    r"|(?:^|[^\w$.])(?:document|window|top|parent|frames|globalthis|opener)\s*"
    r"(?:\.\s*(?:cookie|domain|write|writeln|location|url|documenturi|referrer|body|"
    r"createelement|queryselector\w{0,3}|execcommand|eval|localstorage|"
    r"sessionstorage|\w*html)\b|\[\s*[\"'`])"
    r"|\.\s*(?:innerhtml|outerhtml|insertadjacenthtml|srcdoc)\s*(?:=|\()"
    r"|(?:^|[^\w$.])location\s*(?:\.\s*(?:href|hash|search|replace|assign)\s*)?=[^=]"
    r"|string\s*\.\s*fromcharcode|\.\s*constructor\s*\(|\bconstructor\s*\.\s*constructor"
    r"|\[\s*[\"'`](?:alert|eval|prompt|confirm|cookie|constructor|fromcharcode|location|"
    r"document|\\x24|\$|globaleval|write|innerhtml)[\"'`]\s*\]"
    r"|(?:call|apply|bind)\s*`|\$\{\s*(?:alert|eval|prompt|confirm|\[)"
    r"|expression\s*\(|-moz-binding\s*:|behavior\s*:\s*url|@import\s*[\"'u(]"
    r"|url\s*\(\s*[\"']?\s*(?:javascript|vbscript|livescript|data:)"
    r"|!\s*\[\s*\](?!\s*\()|\+\s*\[\s*\]|\[\s*\]\s*\[\s*[(!+\[]"
    r"|(?:^|[^\w$.])(?:top|self|parent|window|frames)\s*\[\s*[\"'`/]"
)
# Calls that appear in ordinary code too: they count as the value itself, after a break-out
# (quote then ; ) + or a closing tag) or right after ``javascript:``.
_CODE_CALLS = (
    r"(?:eval|settimeout|setinterval|execscript|atob|btoa|fromcharcode|unescape|"
    r"new\s+function|function\s*\(\s*\)\s*\{|import|fetch|xmlhttprequest|globaleval)\s*[(`]"
)
_CALL_AS_VALUE = re.compile(r"^[\s\"'`;)>]{0,6}" + _CODE_CALLS)
_CALL_AFTER_BREAK = re.compile(r"[\"'`]\s*[;)+,|&]\s*(?:[\w$.]{1,20}\s*=\s*)?" + _CODE_CALLS
                               + r"|[\"'`]\s*[;)+,|&]\s*\w{1,40}\s*\(\s*\w{1,40}\s*,\s*\d+\s*\)")
_COMMENTS = re.compile(r"/\*(?:[^*]|\*(?!/))*(?:\*/|$)")
_WS_CTRL = re.compile(r"[\s\x00-\x1f\x7f]+")
_UTF7 = re.compile(r"\+ad[w4]-|\+aci-|\+acc-")
_UTF7_MAP = {"+adw-": "<", "+ad4-": ">", "+aci-": '"', "+acc-": "'"}


def _tags(text: str) -> str | None:
    for m in _TAG.finditer(text):
        closing, name = m.group(1), m.group(2)
        base = name.rsplit(":", 1)[-1]
        end = text.find(">", m.end(), m.end() + 2048)
        seg = text[m.end(): end if end >= 0 else m.end() + 2048]
        if closing:
            if base in _BREAKOUT_CLOSE and base != "a":
                return "close-" + base
            continue
        if base in _BAD_TAGS or name in _BAD_TAGS:
            # A lone word after "<" in prose ("< select one >") is no element.
            if seg[:1] in ("", " ", "\t", "\n", "/", ">", "\r") or base != name:
                return "tag-" + base
            continue
        if ":" in name and base in ("script", "vmlframe", "include"):
            return "ns-tag"
        if _HANDLER.search(seg) or _HANDLER_AFTER_BREAK.search(seg) or _ANY_HANDLER.search(seg):
            return "tag-handler"
        if _SCRIPT_URL_ATTR.search(_WS_CTRL.sub("", seg)) or _DANGEROUS_ATTR.search(seg):
            return "tag-attr"
        if "style" in seg and _SINKS.search(seg):
            return "tag-style"
    for m in _SPACED_TAG.finditer(text):
        name = m.group(1).replace(" ", "").replace("\t", "").replace("\n", "")
        if name in _BAD_TAGS:
            return "spaced-tag"
    return None


def _judge(text: str) -> str | None:
    if _NAME_HANDLER.search(text):
        return "handler-name"
    if "<" in text:
        r = _tags(text)
        if r:
            return r
        if _NS_SPACED.search(text):
            return "ns-tag"
    if ("<" in text or "!" in text) and _MARKUP_SPECIAL.search(text):
        return "markup"
    if "on" in text and "=" in text:
        if _HANDLER.search(text) and (_HANDLER_AFTER_BREAK.search(text) or _HANDLER_CALL.search(text)
                                      or re.search(r"(?:^|[\s;\"'`/])on(?:" + _EVENTS + r")\s*=\s*\S", text)):
            return "handler"
        if _HANDLER_AFTER_BREAK.search(text):
            return "handler-break"
    if ":" in text:
        compact = _WS_CTRL.sub("", text) if ("\t" in text or "\n" in text or "\r" in text) else text
        if _SCHEME.search(compact) or _SCHEME.search(text):
            return "scheme"
    if ("(" in text or "[" in text or "." in text or "`" in text or "${" in text or ":" in text) \
            and _SINKS.search(text):
        return "sink"
    if ("(" in text or "`" in text) and (_CALL_AS_VALUE.search(text) or _CALL_AFTER_BREAK.search(text)):
        return "call"
    if _DANGEROUS_ATTR.search(text) and re.search(r"[\"'`]\s*(?:formaction|srcdoc|xmlns)", text):
        return "attr-break"
    return None


_CSS_ESC = re.compile(r"\\([0-9a-f]{2,6})\s?")


def _css_char(m) -> str:
    cp = int(m.group(1), 16)
    return chr(cp) if 0 < cp < 0x110000 and not 0xD800 <= cp <= 0xDFFF else ""


def detect(text: str, kind: str = "") -> str | None:
    """Name of the rule that judges ``text`` (decoded, lower-case) script injection, else None."""
    r = _judge(text)
    if r:
        return r
    alt = text
    if "\xbc" in alt or "\xbe" in alt:  # US-ASCII with the high bit set: ¼script¾
        alt = alt.replace("\xbc", "<").replace("\xbe", ">").replace("\xa2", '"')
    if "+a" in alt:
        alt = _UTF7.sub(lambda m: _UTF7_MAP[m.group()], alt)
    if "/*" in alt:
        alt = _COMMENTS.sub("", alt)
    if "\\" in alt:
        if _CSS_ESC.search(alt):    # CSS escapes: \0075\0072\006c\0028 is url(
            alt = _CSS_ESC.sub(_css_char, alt)
        alt = alt.replace("\\", "")
    if alt != text:
        return _judge(alt)
    return None
