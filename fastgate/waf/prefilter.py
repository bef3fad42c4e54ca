"""The multi-pattern prefilter: one Hyperscan (vectorscan, through ``pyperscan``) block scan
decides whether anything in a request deserves the precise detectors.

Each rule class lists patterns that are necessary conditions of its detector firing (a
detector only sees a part whose decoded bytes matched one of its class's patterns), so the
prefilter never hides an attack the detectors would have caught: it only spares them the
parts that cannot match. Patterns are case-insensitive, written for the decoded view
(fastgate._core.wafdecode), and tolerate ``+`` as a space (query and form encoding).

In ``fast_view`` buffers, ``\\x01`` precedes the target and the body and ``\\x02`` each header
value; "start of a value" patterns accept ``= " : > \\n \\x01 \\x02`` before the value, as
the precise stage's scan of the value alone does at its start (the fast path once left
``\\x02`` out: a command at the start of a User-Agent was judged only when something else in
the request had been flagged).
"""
from __future__ import annotations

import pyperscan as hs

from fastgate.waf.sqli import STRONG_FUNCS
from fastgate.waf.words import ENGLISH_COMMANDS, STRONG_COMMANDS, WINDOWS_COMMANDS

__all__ = ("Prefilter", "PATTERNS")

_S = r"[\s+]"  # a space in the decoded view, or a form-encoded one
_FOLLOW = r"(?:[\s;|&<>`)'\"$+\x01\x02}]|$)"
# The end of a value: the buffer's end, or in a fast_view buffer the end of a query argument,
# a header value or the target (the precise stage scans each value alone, where ``$`` is it).
_END = r"(?:$|[&\x01\x02])"


def _alt(words) -> str:
    return "(?:" + "|".join(sorted((w.replace(".", r"\.").replace("+", r"\+") for w in words),
                                   key=len, reverse=True)) + ")"


_SQL_WORDS_AFTER_QUOTE = (
    "and|or|xor|not|union|select|like|rlike|regexp|having|order|group|limit|into|procedure|"
    "where|is|in|between|div|mod|from|as|sounds|waitfor|exec|execute|insert|update|delete|"
    "drop|create|alter|truncate|declare|shutdown|intersect|except|minus|collate|escape|"
    "offset|for|then|when|else|end|case|if|sleep|benchmark"
)
_FUNCS = _alt(STRONG_FUNCS)

SQLI = [
    r"['\"`][\s()+]{0,6}(?:[;=<>!+\-*/%^&|~#]|::|(?:" + _SQL_WORDS_AFTER_QUOTE + r")\b)",
    r"['\"`][\s()+]{0,6}$",   # (not _END: browsers' sec-ch-ua and etag headers end so)
    r"\b(?:or|and|xor|not)[\s+(]+(?:[\d'\"@(]|true\b|false\b|null\b|not\b|select\b|exists\b)",
    r"(?:&&|\|\|)",
    r"\b(?:union|intersect|except|minus)\b",
    r"\bselect\b[\s+(]*(?:[*@\d'\"(`]|\w+[\s+]*[(,.]|\w+[\s+]+(?:as|from)\b|distinct\b|all\b|top\b|"
    r"null\b|case\b|if\b|sql_calc|straight_join|high_priority)",
    r"\bselect[\s+]+\w+" + _END,
    r"\b(?:insert|replace)[\s+]+(?:ignore[\s+]+|low_priority[\s+]+|delayed[\s+]+)?into\b",
    r"\bupdate\b[^;\n]{1,80}?\bset\b",
    r"\bdelete[\s+]+from\b",
    r"\b(?:drop|create|alter|truncate|rename)[\s+]+(?:table|database|schema|view|index|procedure|"
    r"function|trigger|user|column|temporary|or)\b",
    r"\btruncate[\s+]+\w",
    r"\bexec(?:ute)?\b[\s+(]*(?:[@('\"]|immediate|master|xp_|sp_)",
    r"\bdeclare[\s+]+@", r"\bwaitfor[\s+]+(?:delay|time)\b", r"\bshutdown\b",
    r"\b(?:grant|revoke)[\s+]+(?:all|select|insert|update|delete|execute)\b",
    r"\bload[\s+]+(?:data|load_file)\b", r";[\s+]*(?:use|show|call|handler|merge|prepare|do|copy|"
    r"pragma|attach)\b", r"\bcopy\b.{0,80}\bprogram\b",
    r"\b(?:order|group)[\s+]+by\b", r"\blimit[\s+]+\d", r"\bhaving\b", r"\bcase[\s+]+when\b",
    r"\bwhere[\s+]+(?:\d|'\w*'[\s+]*=)",
    r"(?:^|[(,\x01\x02=])[\s+]*\d{2,}[\s+]*=[\s+]*\d{2,}[\s+]*(?:[),]|$|[&\x01\x02])",
    r"\bprocedure[\s+]+analyse\b",
    r"\b" + _FUNCS + r"[\s+]*\(", r"::[\s+]*[a-z]", r"@@\w", r"(?:^|[^*])/\*", r"--",
    r"information_schema|pg_catalog|pg_shadow|pg_user|pg_database|pg_tables|sqlite_master|"
    r"sqlite_schema|sqlite_temp_master|msys\w+|sysobjects|syscolumns|sysdatabases|sysusers|"
    r"sysprocesses|mysql\.\w|sys\.\w|all_tables|all_tab_columns|user_tables|user_tab_columns|"
    r"dba_users|dba_tables|v\$version|v\$instance|performance_schema|xp_\w|sp_\w|master\.",
    r"\b(?:tempdb|msdb|northwind|model\.dbo|schema_name|table_name|column_name)\b",
    r"\b(?:4294967295|4294967296|2147483647|2147483648|2147483649|9223372036854775807|"
    r"9223372036854775808|18446744073709551615|18446744073709551616|2\.225073858507201)",
    r"\$(?:ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|not|nor|or|and|elemmatch|expr|"
    r"jsonschema|text|type|size|all|mod|options|function|accumulator|lookup)\b",
    r"(?:<@|@>|\?\||\?&|@\?|#>|#-|->>)",
    r"\)[\s+]*(?:like|rlike|regexp|or|and|xor|=|<|>)", r"\d\.e[(.]",
    r";[\s+(]*(?:insert|update|delete|drop|create|alter|truncate|exec|declare|select|replace|"
    r"rename|grant|shutdown|merge|call|waitfor)\b",
]

XSS = [
    r"<[\s/!?:]{0,6}[a-z]", r"<[\s]{0,3}(?:[a-z][\s]){2}",
    r"on[a-z]{3,40}[\s+]*=",
    r"(?:javascript|livescript|mocha|vbscript)[\s\x00-\x1f]*:",
    r"s[\s\x00-\x1f]*c[\s\x00-\x1f]*r[\s\x00-\x1f]*i[\s\x00-\x1f]*p[\s\x00-\x1f]*t[\s\x00-\x1f]*:",
    r"data[\s+]*:",
    r"(?:alert|prompt|confirm)[\s+]*(?:\(|`|\.call|\.apply)",
    r"(?:document|window|top|self|parent|frames|globalthis|this|content|opener)[\s+]*(?:/\*|[.\[])",
    r"\.[\s+]*(?:innerhtml|outerhtml|insertadjacenthtml|srcdoc)",
    r"location[\s+]*[.=]", r"fromcharcode", r"constructor",
    r"(?:eval|settimeout|setinterval|execscript|atob|btoa|unescape|import|fetch|xmlhttprequest|"
    r"globaleval)[\s+]*[(`]", r"new[\s+]+function", r"function[\s+]*\([\s+]*\)[\s+]*\{",
    r"\[[\s+]*['\"`]", r"(?:call|apply|bind)[\s+]*`", r"\$\{",
    r"expression[\s+]*\(", r"-moz-binding", r"behavior[\s+]*:", r"@import", r"url[\s+]*\(",
    r"[!+]\s{0,3}\[\s{0,3}\]|\]\s{0,3}\[\s{0,3}[(!+\[\]]",
    r"\xbc", r"\+ad[w4]-", r"<!", r"<\?", r"!entity", r"implementation[\s+]*=",
    r"(?:xmlns|xlink:href|formaction|srcdoc|xsi:schemalocation)[\s+]*=",
]

TRAVERSAL = [
    r"\.\.", r"\.\.\.", r"etc[/\\]", r"proc[/\\]", r"sys[/\\]", r"dev[/\\]", r"var[/\\]",
    r"root[/\\]", r"home[/\\]", r"usr[/\\]local", r"win(?:dows|nt)[/\\]", r"(?:win|boot|system)\.ini",
    r"autoexec\.bat", r"inetpub", r"\.ssh", r"id_(?:rsa|dsa|ecdsa|ed25519)", r"authorized_keys",
    r"known_hosts", r"\.ht(?:passwd|access)", r"\.(?:git|svn|hg|bzr)\b", r"\.env\b", r"\.aws",
    r"\.azure", r"\.gcloud", r"\.kube", r"\.docker", r"\.npmrc", r"\.pypirc", r"\.netrc",
    r"\.pgpass", r"\.my\.cnf", r"history", r"\.viminfo", r"\.bash", r"\.profile", r"\.boto",
    r"\.s3cfg", r"\.gitconfig", r"\.vscode", r"\.idea", r"\.ds_store", r"web\.config",
    r"wp-config", r"localsettings\.php", r"config\.inc\.php", r"configuration\.php",
    r"settings\.php", r"database\.yml", r"secrets\.ya?ml", r"credentials", r"server\.xml",
    r"tomcat-users", r"applicationhost\.config", r"php\.ini", r"httpd\.conf", r"nginx\.conf",
    r"my\.ini", r"web-inf", r"meta-inf",
    r"\.(?:sql|bak|old|orig|swp|swo|sav|backup|log|ini|conf|cfg|env|pem|key|dist|inc|tmp|temp)\b",
    r"[/\\]\.", r"^\.", r"~(?:[/\x01\x02]|$)", r"@fs|@id|__x00__", r"0x(?:2e|2f|5c)",
]

# an ``if`` before ``==``, on one line, 60 bytes apart at most (as the detector wants them)
_IF_EQ = r"\bif\b[^\n]{0,60}=="
_ALL_CMDS = _alt(STRONG_COMMANDS | ENGLISH_COMMANDS | WINDOWS_COMMANDS)
_WEAK_CMDS = _alt(ENGLISH_COMMANDS | WINDOWS_COMMANDS)
_START = r"(?:^|[\x01\x02=\":>\n])[\s(\"'\\]{0,2}"
_BINPREFIX = r"(?:\./)?"  # /bin/x and /usr/bin/x are caught by "s?bin/" below
# A JSON key ("type": ...) is no command: a quote ends a command word only when no colon follows.
_FOLLOW_VALUE = r"(?:[\s;|&<>`)'$+\x01\x02}]|\"[^:\s]|\"[\s]+[^:\s]|\"$|$)"
CMDI = [
    r"(?:[;|&\n\r`]|\$\(|[<>]\()[\s({\"'!\\]{0,4}(?:\$\w{1,3}[\s+]+)?" + _BINPREFIX + _ALL_CMDS
    + r"(?:\.exe)?" + _FOLLOW_VALUE,
    _START + _BINPREFIX + _alt(STRONG_COMMANDS) + r"(?:\.exe)?" + _FOLLOW_VALUE,
    _START + _BINPREFIX + _WEAK_CMDS + r"(?:\.exe)?(?:[\s+]+(?:-{1,2}[a-z0-9]|[/~][\w./*?-]|[|<>]|[a-z]:\\)"
    r"|[\s+]*(?:[|;<>`$)]|&&)|[\s+]+[^\s+]+[\s+]*[|<>]|/[a-z?]{1,3}(?:[\s+]|" + _END + "))",
    _START + r"(?:sudo|nohup|time|env|exec|command|builtin|nice|timeout|xargs|strace|ltrace|busybox|"
    r"setsid|stdbuf|unbuffer|doas)[\s+]+",
    _START + r"(?:python|perl|ruby|php|node|lua)\d[\d.]{0,5}[\s+]+[^\s+]",
    # quotes or backslashes inside a command word (c'a't, w"h"o, c\at, ca''t); one quote
    # between letters alone (O'Brien) is not shell obfuscation: an unpaired quote would be
    # a syntax error
    r"\w\\+\w", r"\w'\w*'\w", r"\w\"\w*\"\w", r"\w(?:''|\"\")",
    r"\$[@*#?!0-9({\[]", r"\$ifs", r"\$\{", r"`", r"<<<", r"[<>]\(",
    r"\([\s+]*\)[\s+]*\{", r"~[+-]", r"!-?\d", r"alias[\s+]", r"s?bin/",
    r"\bfor[\s+]+(?:/[dlrf]\b|%)", r"\bif[\s+(]*(?:/i\b|not[\s+]|exist[\s+]|defined[\s+]|errorlevel|cmdextversion)",
    r"\b(?:equ|neq|lss|leq|gtr|geq)\b", _IF_EQ,
    r"cmd(?:\.exe)?[\s+]*/", r"(?:powershell|pwsh)", r"[;|&][\s+]*net1?[\s+]", r"%[a-z]{2,20}%",
    _START + r"net1?[\s+]+(?:user|localgroup|group|share|view|use|start|stop|accounts|session)\b",
    _START + r"netsh(?:\.exe)?[\s+]+(?:firewall|advfirewall|interface|wlan|winhttp|http|portproxy|trace)\b",
    r"\breg(?:\.exe)?[\s+]+(?:add|delete|query|save|export|import|copy|load|restore)\b",
    r"\b(?:system|shell_exec|passthru|popen|proc_open)[\s+]*\([\s+]*['\"`]",
    r"invoke-|new-object|start-process|start-bitstransfer|set-executionpolicy|add-mppreference|"
    r"get-wmiobject|get-ciminstance|downloadstring|downloadfile|frombase64string|"
    r"\b(?:iex|iwr|irm|iwmi|gwmi)\b|\[system\.|-(?:enc|encodedcommand|executionpolicy|"
    r"windowstyle|nop|noprofile)\b",
    r"\{[\w./-]{0,40},[\w./-]{0,40}\}", r"\$(?:shell|bash)\b", r"^[\s]*\\",
    r"/\w{0,4}(?:[?*]|\[[^\]\s]{1,20}\])[\w?*]{0,8}/",
    r"(?:etc|bin|usr|dev|proc|sbin|tmp|var|home|root|lib|opt)/[\w.-]{0,10}(?:[?*]|\[[^\]\s]{1,20}\])",
    r"/\[[^\]\s]{0,20}\]\w", r"\[[^\]\s]{0,20}/[^\]\s]{0,20}\]",
]

RFI = [r"(?:https?|ftps?|sftp|smb|file|php|data|expect|dict|gopher|ldap|jar|zip|phar|ogg|ssh2|rar|"
       r"glob|compress\.\w+):/"]
PHP = [r"<\?", r"\?>", r"\[php\]", r"://", r"\$_[a-z]", r"\$globals", r"\$http_raw", r"\$\{",
       r"[oca]:\d{1,4}:", r"\b[a-z_0-9]{2,40}[\s+]*\("]
JAVA = [r"\$\{", r"%\{", r"java\.", r"javax\.", r"getruntime", r"processbuilder", r"getclass",
        r"forname", r"getmethod", r"getdeclaredmethod", r"newinstance", r"\.invoke", r"classloader",
        r"memberaccess", r"#context", r"#request", r"#response", r"#attr", r"#parameters",
        r"ognl", r"methodaccessor", r"#application", r"#session", r"\bt[\s+]*\([\s+]*java",
        r"org\.apache\.", r"com\.sun\.", r"sun\.misc", r"bsh\.", r"groovy\.lang",
        r"freemarker", r"\?new", r"ro0ab", r"\xac\xed", r"aced0005", r"\.exec[\s+]*\("]

# The fast path's database may hold a cheaper superset of a pattern (it only decides whether
# the precise stage runs; the per-part scans keep the pattern itself): an ``if`` anywhere
# before ``==`` costs no counter, and ``if`` is common in prose (the bounded form took 2.3k of
# the 36k instructions of a benign API request's scans).
FAST_FORMS = {_IF_EQ: r"\bif\b.*=="}

PATTERNS = {
    "sqli": SQLI, "xss": XSS, "path_traversal": TRAVERSAL, "command_injection": CMDI,
    "rfi": RFI, "php": PHP, "java": JAVA,
}


class Prefilter:
    """Compiled once per rule set; ``any(buf)`` for the fast path, ``classes(buf)`` per part."""

    __slots__ = ("_any", "_classes", "_hit", "_names", "_found", "_offsets", "_where")

    def __init__(self, rules):
        self._names = tuple(rules)
        # Patterns go into a database in PATTERNS' order whatever the rules' order (the tag
        # says the class): Hyperscan's compile depends on it, and with the command-injection
        # patterns before the SQL and XSS ones (the engine's judging order) a benign API
        # request's scans took 41k instructions instead of 34k.
        index = {name: ci for ci, name in enumerate(self._names)}

        def database(*flags, forms=None):
            return hs.BlockDatabase(*[hs.Pattern((forms or {}).get(p, p).encode("latin-1"),
                                                 hs.Flag.CASELESS, hs.Flag.DOTALL, *flags,
                                                 tag=index[name])
                                      for name in PATTERNS if name in index
                                      for p in PATTERNS[name]])
        self._hit = [False]
        self._found = set()
        # ``any`` stops at the first match, so SINGLEMATCH would only add its per-pattern
        # bookkeeping: without it the benign scan of a JSON API request takes 36k instead of
        # 50k instructions. ``classes`` reports each pattern once.
        self._any = database(forms=FAST_FORMS).build(self._hit, _on_any)
        self._classes = database(hs.Flag.SINGLEMATCH).build(self._found, _on_class)
        self._offsets = [{}, 0]
        # Without SINGLEMATCH: every match's end offset, for windows in long values.
        self._where = database().build(self._offsets, _on_offset)

    def any(self, buf: bytes) -> bool:
        self._hit[0] = False
        self._any.scan(buf)
        return self._hit[0]

    def any_scanner(self):
        """(scan, flag): ``scan(buf)`` sets ``flag[0]`` when anything matches (``any``
        for callers in C)."""
        return self._any.scan, self._hit

    def classes(self, buf: bytes) -> list:
        """Names of the classes whose patterns match ``buf``, in rule order."""
        found = self._found
        found.clear()
        self._classes.scan(buf)
        if not found:
            return []
        return [self._names[i] for i in sorted(found)]


    def offsets(self, buf: bytes):
        """{class name: sorted end offsets} of every match in ``buf``, or None when there
        are more than ``MAX_MATCHES`` (the caller treats that as past its budget)."""
        state = self._offsets       # [{class index: [ends]}, matches so far]
        off = state[0]
        off.clear()
        state[1] = 0
        self._where.scan(buf)
        if state[1] >= MAX_MATCHES:
            return None
        return {self._names[i]: sorted(v) for i, v in off.items()}


MAX_MATCHES = 1024   # per scanned value


def _on_offset(state, tag, start, end):
    off = state[0]
    lst = off.get(tag)
    if lst is None:
        off[tag] = [end]
    else:
        lst.append(end)
    state[1] += 1
    if state[1] >= MAX_MATCHES:
        return hs.Scan.Terminate
    return hs.Scan.Continue


def _on_any(ctx, tag, start, end):
    ctx[0] = True
    return hs.Scan.Terminate


def _on_class(ctx, tag, start, end):
    ctx.add(tag)
    return hs.Scan.Continue
