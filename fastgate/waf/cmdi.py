"""OS command injection: a shell separator or substitution followed by a command, Windows
batch structures, shell expansions, and values that are themselves a command line.

Two views are judged: the decoded value, and a de-obfuscated copy the shell would read the same
way (quotes and backslashes inside words removed: ``w'h'o'am'i``, ``\\ls``, ``c\\at``; ``$@``
and empty ``$()`` removed; ``${IFS}`` and ``$IFS$9`` read as spaces; ``{cat,/etc/passwd}`` as
``cat /etc/passwd``).

Commands that are also English words (``time``, ``more``, ``find``, ``head``) count only with
shell evidence after them (an option, a path, a redirection, a pipe, another command, or the
end of the value right after a separator), so "hello; time he came" passes.
"""
from __future__ import annotations

import re

from fastgate.waf.words import BARE_COMMANDS, ENGLISH_COMMANDS, STRONG_COMMANDS, WINDOWS_COMMANDS

__all__ = ("detect",)

_ALL = STRONG_COMMANDS | ENGLISH_COMMANDS | WINDOWS_COMMANDS
_WORD = r"[a-z_][\w.+-]{0,40}"
_PREFIX = r"(?:(?:/usr)?(?:/local)?/s?bin/|\./|~/)?"
_SEP = r"(?:^|[;|&\n\r`]|\$\(|[<>]\(|\|\||&&)"
_WRAPPERS = ("sudo", "nohup", "time", "env", "exec", "command", "builtin", "nice", "timeout",
             "xargs", "strace", "ltrace", "busybox", "setsid", "stdbuf", "unbuffer", "doas")
_CMD_AFTER_SEP = re.compile(_SEP + r"[\s({\"'!]{0,4}(?:\$\w{1,3}\s+)?" + _PREFIX + r"(" + _WORD + r")")
_START_CMD = re.compile(r"^[\s({\"']{0,4}" + _PREFIX + r"(" + _WORD + r")")
# What follows a command name when it is run as one.
_EVIDENCE = re.compile(
    r"^(?:\s*$|\s*[;|&<>`$]|\s+-{1,2}[a-z0-9]|\s+[/~.][\w/.*?-]|\s+[\"']|\s*\)|\s+\w+\s*[|;&<>]|"
    r"\s+(?:" + _WORD + r")\s+[-/]|\s+\$|\s+[a-z]:\\|\s+\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\s*[;|&]|\s*\|)"
)
_SLEEP_ARG = re.compile(r"\s+\d{1,6}(?:\.\d+)?[smhd]?\s*(?:$|[;|&`)#'\"]|\n)")
_DRIVE_ARG = re.compile(r"\s+[\"']?[a-z]:\\")   # type c:\windows\... / dir c:\\
# A call that hands a command line to the shell: system('id'), shell_exec("ls -la") (not a
# method, os.system(...), and not exec(), which runs code in Python and JavaScript).
_SHELL_CALL = re.compile(r"(?:^|[^\w$>.])(?:system|shell_exec|passthru|popen|proc_open)\s*\(\s*[\"'`]\s*"
                         r"(?:(?:/usr)?(?:/local)?/s?bin/)?(" + _WORD + r")")
_REG = re.compile(r"(?:^|[;|&\s`'\"(])reg(?:\.exe)?\s+(?:add|delete|query|save|export|import|copy|load|"
                  r"restore)\s+[\"']?(?:hk(?:lm|cu|cr|u|cc)\b|hkey_)")
_RECON = frozenset(("id", "pwd", "ls", "ps", "env", "uname", "hostname", "whoami", "ifconfig", "set",
                    "dir", "ver", "w", "who", "groups", "users", "uptime", "netstat", "ipconfig"))
_EVIDENCE_STRONG_ARG = re.compile(r"^\s+(\S+)")
_BIN_PATH = re.compile(r"(?:^|[\s;|&`'\"(=])(?:/usr|/usr/local)?/s?bin/(" + _WORD + r")(?:[\s;|&`'\")]|$)"
                       r"|(?:^|[\s=;|&])(?:usr/)?s?bin/(" + _WORD + r")$")
_SUBST_BACKTICK = re.compile(r"`\s*([^`]{0,200})`?")
_SUBST_DOLLAR = re.compile(r"\$\(\s*\(?\s*([^)]{0,200})")
_EXPANSIONS = re.compile(
    r"\$\{\s*(?:ifs|shell|path|home|user|pwd|oldpwd|hostname|bash\w*|shlvl|ps[1-4]|"
    r"random|seconds|uid|euid|ppid|lineno|histfile|ld_preload)\b"
    r"|\$\{[#!]?\w{1,30}\s*(?:[:#%/^,~]|\[)|\$\{\s*\w{0,30}\s*#\s*\{"
    r"|\$\(\s*\)|\$\(\(|\$\[[^\]]{0,40}\]|\$ifs\b|\$\{\s*\w{1,30}\s*\}\s*-c\b|"
    r"\$\{[a-z_]{1,30}\}(?=[\s;|&]|$)|[<>]\(\s*[a-z]|<<<|\$'\\x|\$\{\s*`|"
    r"\$(?:shell|bash|bash_version|ifs)\b"
)
_SHELLSHOCK = re.compile(r"\(\s*\)\s*\{")
_TILDE = re.compile(r"~[+-]\d{0,3}")
_HISTORY = re.compile(r"(?:^|[\s;|&])!-?\d+(?:!-?\d+)?$|^!-\d+")
_ALIAS = re.compile(r"(?:^|[;|&\s])alias\s+(?:[-+]\w+\s+)*[\"']?[\w.-]{1,40}[\"']?\s*=")
_BRACES = re.compile(r"(\w{0,20})\{([\w./-]{0,40}(?:,[\w./-]{0,40}){1,8})\}(\w{0,20})")
_GLOB_PATH = re.compile(r"(?:/[\w?*\[\]!.\-]{1,40}){2,8}")
_GLOB_TARGETS = ("/etc/passwd", "/etc/shadow", "/etc/hosts", "/etc/group", "/bin/bash", "/bin/sh",
                 "/bin/cat", "/bin/nc", "/usr/bin/uname", "/usr/bin/bash", "/usr/bin/perl",
                 "/usr/bin/python", "/usr/bin/curl", "/usr/bin/wget", "/usr/bin/id",
                 "/usr/bin/whoami", "/usr/sbin/", "/sbin/", "/dev/tcp", "/proc/self", "/etc", "/bin",
                 "/usr/bin")
# Windows: batch control flow and interpreters.
_WIN_FOR = re.compile(r"(?:^|[&|;(\s])for\s+(?:/[dlrf]\s+(?:[\"'][^\"']{0,80}[\"']\s+|[\w:\\./%~-]{1,80}\s+)?)*%{1,2}[^\s%]{0,30}\s+in\s*\(")
_WIN_IF = re.compile(
    r"(?:^|[&|;(])\s*if\s+(?:/i\s+)?(?:not\s+)?(?:exist\s+\S|defined\s+\w+\s*(?:\(|$|\w+\s)|"
    r"errorlevel\s+\d|cmdextversion\s+\d)"
    r"|(?:^|[&|;(])\s*if\s*(?:/i\s+)?(?:not\s+)?[\"'(\[{%]?[\w%~:\-!\"]{0,40}[\"')\]}%]?\s*"
    r"(?:==|\b(?:equ|neq|lss|leq|gtr|geq)\b)"
    r"|(?:^|[&|;(])\s*if\s+(?:/i\s+)?[\w%\"']{1,20}\s*(?:==|===)"
    r"|(?:^|[&|;(])\s*if\s+(?:/i\s+)?(?:not\s+)?\"[^\"]{0,40}\"\s*(?:==|\b(?:equ|neq|lss|leq|gtr|geq)\b)"
    r"|(?:^|[&|;(])\s*if\s*/i\b|(?:^|[&|;(])\s*if\s+(?:\S+\s+){1,3}(?:equ|neq|lss|leq|gtr|geq)\b"
)
_WIN_SHELL = re.compile(
    r"(?:^|[\s;|&`'\"(=\\/])(?:cmd(?:\.exe)?\s*/[ckr]\b|"
    r"(?:^|[;|&])\s*net1?\s+(?:user|localgroup|group|share|view|use|start|stop|accounts|session)\b|"
    r"(?:^|[;|&])\s*netsh(?:\.exe)?\s+(?:firewall|advfirewall|interface|wlan|winhttp|http|portproxy|trace)\b|"
    r"(?:powershell|pwsh)(?:\.exe)?\s+(?:-|/)\w|"
    r"%(?:comspec|systemroot|windir|programfiles|appdata|temp|systemdrive|userprofile|"
    r"homepath|public|allusersprofile|psmodulepath|path|cd|random|errorlevel|date|time)%)"
)
_PS_CMDLETS = re.compile(
    r"(?:^|[\s;|&`'\"(=])(?:invoke-(?:expression|webrequest|restmethod|command|item|wmimethod|"
    r"shellcode|mimikatz|cimmethod)|new-object\s+(?:-\w+\s+)?(?:system\.net|net\.webclient|"
    r"-com)|start-process|start-bitstransfer|set-executionpolicy|add-mppreference|"
    r"get-wmiobject|get-ciminstance|downloadstring|downloadfile|frombase64string|"
    r"iex\s*[(\s$]|iwr\s+\S|irm\s+\S|iwmi\s+\S|gwmi\s+\S|"
    r"\[system\.(?:convert|text\.encoding|reflection|diagnostics)|"
    r"-(?:enc|encodedcommand|executionpolicy|windowstyle|nop|noprofile)\b)"
)


def _deobfuscate(t: str) -> str:
    t = re.sub(r"\$\{\s*ifs\s*(?:[%#][^}]{0,10})?\}|\$ifs(?:\$\d)?", " ", t)
    t = re.sub(r"\$[@*#?!]|\$\d|\$\{\s*\}|\$\(\s*\)|\$\{\w{0,3}\}", "", t)
    if "'" in t or '"' in t:
        t = t.replace("'", "").replace('"', "")
    if "\\" in t:
        t = re.sub(r"\\(?=[\w/])", "", t)
    if "{" in t:
        t = _BRACES.sub(lambda m: m.group(1) + " " + " ".join(m.group(2).split(",")) + " " + m.group(3), t)
    return t


def _command_runs(name: str, rest: str, after_sep: bool) -> bool:
    """``name`` is a command word; ``rest`` the text after it."""
    if name.endswith((".exe", ".com", ".bat", ".cmd", ".ps1", ".sh", ".pl", ".py")):
        name = name.rsplit(".", 1)[0]
    if re.fullmatch(r"(?:python|perl|ruby|php|node|lua)\d[\d.]{0,5}", name):
        return bool(re.match(r"\s+\S", rest))
    if name in WINDOWS_COMMANDS and re.match(r"/[a-z?]{1,3}(?:\s|$)", rest):
        return True
    if rest[:1] in ("/", ".", "-", "=", ":", "@", "+") and name not in STRONG_COMMANDS:
        return False  # a product token (curl/7.1, wget-1.2), a domain or an assignment
    if rest[:1] == "/" or rest[:1] == "=":
        return False
    if name in STRONG_COMMANDS:
        if rest[:1] in ("", " ", "\t", ";", "|", "&", "<", ">", "`", ")", "\n", "$", "'", '"', "}", ","):
            return True
        return False
    if name in ENGLISH_COMMANDS or name in WINDOWS_COMMANDS:
        if rest[:1] not in ("", " ", "\t", ";", "|", "&", "<", ">", "`", ")", "\n", "$"):
            return False
        if after_sep and _EVIDENCE.match(rest):
            return True
        if after_sep and name == "sleep" and _SLEEP_ARG.match(rest):
            return True     # ; sleep 15 / && sleep 5: the blind injection probe
        if not after_sep and rest.strip():
            return bool(re.match(r"^(?:\s+(?:-{1,2}[a-z0-9]|[/~][\w./*?-]|[|<>])|\s*(?:[|;<>`$)]|&&)|\s+\S+\s*[|<>])", rest)
                        or name in WINDOWS_COMMANDS and _DRIVE_ARG.match(rest))
        m = _EVIDENCE_STRONG_ARG.match(rest)
        if m:
            nxt = m.group(1).strip("'\"")
            if nxt in STRONG_COMMANDS:
                return True
        return False
    return False


def _judge(t: str, kind: str) -> str | None:
    for m in _CMD_AFTER_SEP.finditer(t):
        name = m.group(1)
        start = m.start()
        if start == 0 and t[:1] not in ";|&\n\r`$<>{":
            continue  # start of value: judged below
        if name in _ALL or re.fullmatch(r"(?:python|perl|ruby|php)\d[\d.]{0,5}", name):
            rest = t[m.end():m.end() + 240]
            w = name
            while w in _WRAPPERS and rest.strip():
                m2 = re.match(r"\s+(?:-\S+\s+)*" + _PREFIX + "(" + _WORD + ")", rest)
                if not m2:
                    break
                w, rest = m2.group(1), rest[m2.end():]
            sep = t[start:start + 2]
            if sep[:1] == "`" or sep == "$(":
                if w in STRONG_COMMANDS and _command_runs(w, rest, True) or \
                        w in _RECON and re.match(r"\s*(?:[`)]|-\w|$)", rest) or \
                        re.match(r"[^`)]{0,80}(?:/etc/|/bin/|/dev/|/tmp/|/proc/|[;|&$<>])", rest) or \
                        w == "sleep" and re.match(r"\s+\d", rest):
                    return "substitution-command"
                continue
            if _command_runs(w, rest, True) or w != name and (w in _ALL):
                return "separator-command"
    m = _START_CMD.match(t)
    if m:
        name = m.group(1)
        rest = t[m.end():m.end() + 240]
        if name in _ALL or re.fullmatch(r"(?:python|perl|ruby|php)\d[\d.]{0,5}", name):
            w = name
            while w in _WRAPPERS and rest.strip():
                m2 = re.match(r"\s+(?:-\S+\s+)*" + _PREFIX + "(" + _WORD + ")", rest)
                if not m2:
                    break
                w, rest = m2.group(1), rest[m2.end():]
            if w != name and w in _ALL:
                return "wrapped-command"
            if w in BARE_COMMANDS and re.match(r"\s+[\w.-]{1,40}(?:\s+[\w.-]{1,40}){0,3}\s*$", rest):
                return "admin-command"
            if kind in ("header", "name", "jsonkey") and not re.search(r"[;|&`$<>]|\s-{1,2}\w", rest):
                pass
            elif w in STRONG_COMMANDS and _command_runs(w, rest, False):
                if rest.strip() == "" and w in BARE_COMMANDS or \
                        re.match(r"^\s+(?:-{1,2}\w|[/~.$\"'`(]|\S+\s*[|;&<>])|^\s*[|;&<>`$)]", rest):
                    return "command-line"
            elif _command_runs(w, rest, False):
                return "command-line"
    for m in (_SUBST_BACKTICK.finditer(t) if "`" in t else ()):
        inner = m.group(1).strip()
        w = re.match(r"[\s(]*" + _PREFIX + "(" + _WORD + ")", inner)
        if w and (w.group(1) in STRONG_COMMANDS and _command_runs(w.group(1), inner[w.end():], True)
                  or w.group(1) in _RECON and re.match(r"\s*(?:-\w|$)", inner[w.end():])):
            return "backtick"
    for m in (_SUBST_DOLLAR.finditer(t) if "$(" in t else ()):
        inner = m.group(1).strip()
        w = re.match(r"[\s(]*" + _PREFIX + "(" + _WORD + ")", inner)
        if not inner or w and w.group(1) in STRONG_COMMANDS or inner[:1].isdigit() or \
                w and w.group(1) in _RECON and re.match(r"[\w.-]+\s*(?:\)|-\w|$)", inner) or \
                w and w.group(1) in _ALL and re.match(r"[\w.-]+\s*(?:\)|$)", inner) or \
                w and w.group(1) in _ALL and re.search(r"/etc/|/bin/|/dev/|/tmp/|/proc/|[;|&$<>]|^sleep\s+\d", inner):
            return "dollar-subst"
    if ("$" in t or "<" in t or ">(" in t) and _EXPANSIONS.search(t):
        return "expansion"
    m = re.match(r"\s*\\+(" + _WORD + ")", t)
    if m and m.group(1) in _ALL and not re.match(r"\s*\\+[a-z]:", t):
        return "escaped-command"
    if re.match(r"\s*/(?:usr/(?:local/)?)?s?bin/[\w.-]{1,40}(?:\s|$)", t):
        return "binary-path"
    m = _BIN_PATH.search(t) if "bin/" in t else None
    if m and (m.group(1) or m.group(2)) in _ALL:
        return "binary-path"
    if "{" in t and _SHELLSHOCK.search(t) and (t.lstrip().startswith("(") or re.search(r"\(\s*\)\s*\{\s*:?\s*;?\s*\}", t)):
        return "shellshock"
    if ("~" in t or "!" in t) and (_TILDE.fullmatch(t.strip()) or _HISTORY.search(t)):
        return "expansion"
    if "alias" in t and _ALIAS.search(t):
        return "alias"
    if "(" in t:
        for m in _SHELL_CALL.finditer(t):
            if m.group(1) in _ALL:
                return "shell-call"
    if "reg" in t and _REG.search(t):
        return "windows-registry"
    if "for" in t and "%" in t and _WIN_FOR.search(t) and re.search(r"\)\s*do\b", t):
        return "batch-for"
    if "if" in t and _WIN_IF.search(t):
        return "batch-if"
    if ("%" in t or "cmd" in t or "sh" in t or "net" in t) and _WIN_SHELL.search(t) or "-" in t and _PS_CMDLETS.search(t) \
            or ("iex" in t or "iwr" in t or "irm" in t or "wmi" in t or "[system." in t) and _PS_CMDLETS.search(t):
        return "windows-shell"
    if "{" in t or "[" in t or "?" in t or "*" in t:
        g_text = re.sub(r"\[[^\]\s]{1,20}\]", "?", t)
        for gm in _GLOB_PATH.finditer(g_text):
            g = gm.group()
            if any(ch in g for ch in "?*") and _glob_hits(g):
                return "glob-path"
        for bm in _BRACES.finditer(t):
            pre, items, post = bm.group(1), bm.group(2).split(","), bm.group(3)
            if any((pre + it + post) in _ALL and len(pre + it + post) > 1 for it in items if it or pre or post):
                return "brace-expansion"
    return None


def _glob_hits(g: str) -> bool:
    segs = [x for x in g.split("/") if x]
    for target in _GLOB_TARGETS:
        tsegs = [x for x in target.split("/") if x]
        if len(segs) > len(tsegs) + 1 or not segs:
            continue
        ok = True
        for i, sg in enumerate(segs[:len(tsegs)]):
            rx = _glob_regex(sg)
            if rx is None or not rx.fullmatch(tsegs[i]):
                ok = False
                break
        if ok and any(ch in "".join(segs[:len(tsegs)]) for ch in "?*") and len(segs) >= 1:
            return True
    return False


def _glob_regex(g: str):
    out = []
    i = 0
    while i < len(g):
        c = g[i]
        if c == "?":
            out.append(".")
        elif c == "*":
            out.append("[^/]{0,40}")
        elif c == "[":
            j = g.find("]", i + 1)
            if j < 0:
                return None
            out.append(".")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out))
    except re.error:
        return None


def detect(text: str, kind: str = "") -> str | None:
    """Rule name when ``text`` (decoded, lower-case) would run a command in a shell, else None."""
    r = _judge(text, kind)
    if r:
        return r
    d = _deobfuscate(text)
    if d != text:
        return _judge(d, kind)
    return None
