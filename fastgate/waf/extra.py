"""The optional rules: ``rfi`` (remote file inclusion), ``php`` (PHP code and wrappers) and
``java`` (log4shell lookups, Java class and expression-language injection, serialized objects).

Each ``detect_*(text, kind)`` takes the decoded, lower-cased value and returns a rule name or
None. Log4j lookups are resolved the way log4j would before judging: ``${lower:j}``,
``${upper:n}``, ``${::-d}``, ``${env:X:-i}`` and ``${date:'j'}`` all become the letter they
produce, innermost first, so ``${${lower:j}ndi:`` reads ``${jndi:``.
"""
from __future__ import annotations

import re

__all__ = ("detect_rfi", "detect_php", "detect_java", "resolve_lookups")

# --- rfi -------------------------------------------------------------------------------------
_URL = re.compile(r"(?:^|[\s=\"'(])((?:https?|ftps?|sftp|smb|file|php|data|expect|dict|gopher|"
                  r"ldap|jar|zip|phar|ogg|ssh2|rar|glob|compress\.\w+)://?([^/\s?#]{0,255})([^\s]{0,2048}))")
_IP_HOST = re.compile(r"(?:[^@]*@)?(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[0-9a-f:.]{2,45}\]|"
                      r"0x[0-9a-f]{8}|\d{8,10})(?::\d{1,5})?$")
_INCLUDE_PARAM = re.compile(r"(?:^|[?&\s])(?:file|page|include|inc|path|template|doc|document|"
                            r"folder|root|pg|style|pdf|php_path|mod|conf|dir|view|content|layout)"
                            r"\s*=\s*(?:https?|ftps?)://")


def detect_rfi(text: str, kind: str = "") -> str | None:
    if "://" not in text and ":/" not in text:
        return None
    for m in _URL.finditer(text):
        scheme = m.group(1).split(":", 1)[0]
        host, rest = m.group(2), m.group(3)
        if scheme in ("http", "https", "ftp", "ftps"):
            if _IP_HOST.match(host):
                return "url-ip-host"
            if rest.endswith("?") or rest.endswith("?\x00") or re.search(r"\?+$|%3f$", rest):
                return "url-trailing-query"
            if re.search(r"\.(?:txt|php\d?|phtml|inc|jsp|asp|aspx|pl|cgi|sh|py)\?", rest):
                return "url-script-query"
        elif scheme == "file":
            return "file-url"
    if _INCLUDE_PARAM.search(text):
        return "include-param"
    return None


# --- php -------------------------------------------------------------------------------------
_PHP_OPEN = re.compile(r"<\?(?:php\b|=|\s)|\?>\s*$|\[php\]")
_PHP_WRAPPER = re.compile(r"(?:^|[^a-z])(?:php://(?:filter|input|stdin|fd|memory|temp|output)|"
                          r"(?:phar|zip|expect|glob|data|zlib|compress\.zlib|compress\.bzip2|rar|"
                          r"ogg|ssh2\.\w+)://)")
_PHP_FUNCS = (
    r"(?:system|exec|shell_exec|passthru|popen|proc_open|pcntl_exec|eval|assert|"
    r"create_function|call_user_func(?:_array)?|preg_replace|base64_decode|gzinflate|"
    r"gzuncompress|gzdecode|str_rot13|convert_uudecode|hex2bin|file_get_contents|"
    r"file_put_contents|fopen|fwrite|fputs|readfile|file|include(?:_once)?|require(?:_once)?|"
    r"phpinfo|posix_\w+|ini_set|ini_get|set_time_limit|putenv|getenv|dl|mail|move_uploaded_file|"
    r"unserialize|serialize|var_dump|print_r|highlight_file|show_source|php_uname|"
    r"getcwd|scandir|opendir|readdir|glob|chmod|chown|unlink|rmdir|mkdir|symlink|fsockopen|"
    r"pfsockopen|stream_socket_client|curl_exec|curl_init|array_map|array_filter|usort|"
    r"uasort|uksort|array_walk|register_shutdown_function|register_tick_function|"
    r"ob_start|extract|parse_str|mb_ereg_replace|escapeshellcmd|escapeshellarg|"
    r"get_defined_vars|get_current_user|getmypid|apache_\w+|func_get_args|session_start)"
)
_PHP_CALL = re.compile(r"(?:^|[^\w$>.:])" + _PHP_FUNCS + r"\s*\(")
_PHP_VARS = re.compile(r"\$_(?:get|post|request|server|cookie|files|env|session)\b|\$globals\b|"
                       r"\$http_raw_post_data|\$\{\s*['\"]?_(?:get|post|request)")
_PHP_SERIAL = re.compile(r"(?:^|[;{])[oc]:\d{1,4}:\"[\w\\]{1,200}\":\d{1,4}:\{|(?:^|[;{])a:\d{1,4}:\{[si]:\d")
_PHP_STRONG_CALLS = {"system", "exec", "shell_exec", "passthru", "popen", "proc_open", "pcntl_exec",
                     "eval", "assert", "create_function", "base64_decode", "gzinflate", "str_rot13",
                     "phpinfo", "file_get_contents", "file_put_contents", "include", "require",
                     "include_once", "require_once", "unserialize", "php_uname", "fsockopen",
                     "call_user_func", "call_user_func_array", "preg_replace", "highlight_file",
                     "show_source", "readfile", "move_uploaded_file", "posix_getpwuid", "getcwd",
                     "scandir", "gzuncompress", "convert_uudecode", "hex2bin", "curl_exec"}


def detect_php(text: str, kind: str = "") -> str | None:
    if "<?" in text or "?>" in text or "[php]" in text:
        if _PHP_OPEN.search(text):
            return "php-open-tag"
    if "://" in text and _PHP_WRAPPER.search(text):
        return "php-wrapper"
    if "$" in text and _PHP_VARS.search(text):
        return "php-superglobal"
    if ":" in text and _PHP_SERIAL.search(text):
        return "php-serialized"
    if "(" in text:
        for m in _PHP_CALL.finditer(text):
            name = re.match(r"\W*(\w+)", m.group()).group(1)
            if name in _PHP_STRONG_CALLS:
                return "php-function"
            # Weaker names count when PHP syntax surrounds them (a $variable, a ; or a string).
            after = text[m.end(): m.end() + 120]
            if re.match(r"\s*(?:\$\w|['\"][^'\"]{0,100}['\"]\s*[,)]|\w+\s*\()", after) and (
                    ";" in text or "$" in text or m.start() == 0):
                return "php-function"
    return None


# --- java ------------------------------------------------------------------------------------
_LOOKUP_INNER = re.compile(r"\$\{([^${}]{0,200})\}")
_LOOKUPS = ("jndi", "ldap", "ldaps", "rmi", "dns", "iiop", "corba", "nds", "nis", "http", "https")
_LOG4J_LOOKUP = re.compile(r"\$\{\s*(?:jndi|ctx|sys|env|java|main|bundle|k8s|docker|spring|"
                           r"web|log4j|marker|map|sd|base64|lower|upper|date|event|jvmrunargs|"
                           r"hostname|:-)\s*:")
_JAVA = re.compile(
    r"\bjava\.(?:io|lang|net|nio|util|beans|rmi|security|sql)\.[a-z]\w*|\bjava\.runtime\b|"
    r"processbuilder|com\.opensymphony\.|org\.omg\.|"
    r"java\.lang\.(?:runtime|processbuilder|process|system|class|classloader|thread|reflect|"
    r"object|string)|java\.(?:io\.(?:file|objectinputstream|bufferedreader|inputstreamreader)|"
    r"net\.(?:url|socket|urlclassloader)|util\.scanner|beans\.|rmi\.|nio\.file)|"
    r"javax\.(?:script|naming|management|el)|runtime\s*\.\s*getruntime\s*\(|"
    r"getruntime\s*\(\s*\)\s*\.\s*exec|processbuilder\s*\(|\.getclass\s*\(\s*\)|"
    r"\.forname\s*\(|\.getmethod\s*\(|\.getdeclaredmethod|\.newinstance\s*\(|\.invoke\s*\(|"
    r"classloader|class\.module\.classloader|class\.classloader|@java\.lang|"
    r"#_memberaccess|#context\[|#request|#response|#attr\[|#parameters|@ognlcontext|"
    r"ognlcontext|xwork\.methodaccessor|#application|#session\[|"
    r"\bt\s*\(\s*java\.|new\s+java\.|org\.apache\.(?:commons\.collections|xalan|struts|"
    r"catalina|tomcat)|com\.sun\.(?:rowset|org\.apache|jndi)|sun\.misc\.|bsh\.interpreter|"
    r"groovy\.lang|freemarker\.template\.utility\.execute|\?new\s*\(\s*\)|"
    r"rO0AB|\xac\xed\x00\x05|aced0005|%\{\s*#|\$\{\s*#|\$\{\s*\(\s*#|"
    r"\.exec\s*\(\s*[\"'](?:cmd|/bin|bash|sh|calc|whoami|ping|curl|wget|nslookup)"
)


def resolve_lookups(text: str) -> str:
    """Evaluate log4j's string-producing lookups, innermost first (bounded passes)."""
    for _ in range(12):
        changed = False

        def repl(m):
            nonlocal changed
            body = m.group(1)
            head, sep, tail = body.partition(":")
            h = head.strip()
            if h in ("lower", "upper"):
                changed = True
                return tail
            if ":-" in body:
                changed = True
                return body.split(":-", 1)[1]
            if h == "date" and tail[:1] in ("'", '"'):
                changed = True
                return tail.strip("'\"")
            if not sep and not h:
                changed = True
                return ""
            return m.group(0).replace("${", "\x01").replace("}", "\x02")
        text = _LOOKUP_INNER.sub(repl, text)
        if not changed:
            break
    return text.replace("\x01", "${").replace("\x02", "}")


def detect_java(text: str, kind: str = "") -> str | None:
    if "${" in text or "%{" in text:
        r = resolve_lookups(text) if "${" in text else text
        if re.search(r"\$\{\s*(?:" + "|".join(_LOOKUPS) + r")\s*:", r):
            return "log4shell"
        if _LOG4J_LOOKUP.search(r):
            return "log4j-lookup"
        if re.search(r"\$\{[^}]{0,100}:[^}]{0,100}\}", r) and re.search(r"(?:jndi|ldap|rmi|dns):", r):
            return "log4shell"
    if _JAVA.search(text):
        return "java-class"
    return None
