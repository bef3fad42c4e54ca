"""SQL injection: tokenise, fold, judge the token shape.

The idea is libinjection's (a value is dangerous when, placed into a query as a number or inside
a quoted string, it turns into SQL structure), the tokenizer, the token classes and the rules are
ours. A value is tokenised in up to four contexts: as it is (a number or identifier slot), inside
``'...'`` and inside ``"..."`` (only when it holds that quote: the prefix string is the part the
application quoted, what follows the closing quote is code), and with ``/* */`` comments deleted
(``un/**/ion``, which MySQL itself would not join but filters that strip comments do).

Token classes (one character each, so a value folds into a short string the rules match):
``s`` string, ``1`` number, ``v`` @variable, ``n`` identifier, ``k`` keyword, ``U`` union,
``S`` select, ``X`` another statement verb, ``&`` and/or/xor/&&/||, ``o`` operator,
``f`` call of an unknown function, ``F`` call of a known SQL function, ``t`` a ``::type`` cast,
``( ) , ; .`` themselves, ``c`` comment, ``?`` anything else.

Input is bounded by the caller (a window of at most a few KiB); the regexes below are single
pass tokens without nested quantifiers, and the rules run over the folded class string.
"""
from __future__ import annotations

import re

__all__ = ("detect", "tokenize", "fold")

_TOKEN = re.compile(
    r"""(?P<ws>[\s\x0b\xa0]+)
    |(?P<vc>/\*!\d{0,6}|\*/)
    |(?P<cm>/\*(?:[^*]|\*(?!/))*(?:\*/)?|--[^\n]*|\#[^\n]*)
    |(?P<sq>'(?:[^'\\]|\\[\s\S]|'')*'?)
    |(?P<dq>"(?:[^"\\]|\\[\s\S]|"")*"?)
    |(?P<bt>`[^`]*`?|\[[a-z_][\w ]{0,30}\])
    |(?P<num>0x[0-9a-f]+|0b[01]+|(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?(?:\.e)?)
    |(?P<var>@@?[\w$.]+|@`[^`]*`?|@)
    |(?P<cast>::\s*[a-z]+(?:\s+precision)?)
    |(?P<word>[a-z_$][\w$]*(?:\.[a-z_$][\w$]*)*)
    |(?P<op><=>|<>|!=|>=|<=|->>|->|\#>>|\#>|\#-|<@|@>|\?\||\?&|@\?|@@|\|\||&&|<<|>>|:=|!<|!>|[=<>!+\-*/%^&|~?])
    |(?P<p>[(),;.])
    |(?P<other>[\s\S])""",
    re.X,
)

# Words that carry meaning in SQL. Everything else is an identifier (n) or a call (f/F).
_UNION = {"union", "intersect", "except", "minus"}
_STMT = {
    "insert", "update", "delete", "drop", "create", "alter", "truncate", "exec", "execute",
    "declare", "grant", "revoke", "shutdown", "waitfor", "merge", "call", "handler", "rename",
    "replace", "load", "use", "show", "backup", "restore", "dbcc", "sp_executesql", "prepare",
    "deallocate", "lock", "unlock", "attach", "pragma", "copy", "do",
}
_LOGIC = {"and", "or", "xor", "&&", "||"}
_OPWORDS = {"like", "rlike", "regexp", "sounds", "is", "not", "in", "between", "div", "mod",
            "glob", "match", "against", "escape", "collate", "binary", "similar", "ilike"}
_KEYWORDS = {
    "from", "where", "into", "values", "value", "table", "database", "schema", "having", "group",
    "order", "by", "limit", "offset", "join", "inner", "outer", "left", "right", "cross",
    "natural", "on", "as", "case", "when", "then", "else", "end", "null", "true", "false", "all",
    "distinct", "distinctrow", "top", "procedure", "analyse", "delay", "time", "outfile",
    "dumpfile", "set", "asc", "desc", "exists", "if", "begin", "immediate", "returns", "return",
    "function", "view", "index", "trigger", "user", "ignore", "using", "character", "fetch",
    "next", "rows", "only", "for", "with", "recursive", "window", "partition", "over", "any",
    "some", "unknown", "default", "sql_calc_found_rows", "straight_join", "high_priority",
    "low_priority", "nowait", "share", "mode", "column", "add", "change", "modify", "primary",
    "key", "foreign", "references", "constraint", "unique", "auto_increment", "engine",
    "charset", "collation", "varchar", "int", "integer", "text", "deterministic", "precision",
}
# Functions that exist to exfiltrate, delay or fingerprint: a call anywhere is an attack.
STRONG_FUNCS = {
    "sleep", "benchmark", "pg_sleep", "load_file", "extractvalue", "updatexml", "xmltype",
    "group_concat", "concat_ws", "name_const", "make_set", "sys_eval", "sys_exec",
    "xp_cmdshell", "xp_dirtree", "xp_regread", "xp_fileexist", "sp_oacreate",
    "sqlite_version", "sqlite_compileoption_used", "sqlite_compileoption_get", "pg_read_file",
    "pg_ls_dir", "pg_stat_file", "lo_import", "lo_export", "lo_get", "lo_put", "dbms_pipe",
    "utl_inaddr", "utl_http", "dbms_xmlgen", "dbms_lock", "sys_context", "db_name",
    "schema_name", "current_user", "session_user", "system_user", "last_insert_id",
    "row_count", "found_rows", "connection_id", "uuid_short", "json_extract", "json_keys",
    "jsonb_pretty", "json_build_object", "starts_with", "unistr", "string_to_array", "elt",
    "iif", "ifnull", "nullif", "isnull", "exp", "polygon", "multipoint", "geometrycollection",
    "linestring", "multilinestring", "multipolygon", "procedure_analyse", "find_in_set",
    "waitfor", "convert", "cast", "char", "chr", "nchar", "ascii", "unhex", "substring",
    "substr", "mid", "concat", "database", "version", "user", "schema", "sysdate", "now",
    "benchmark", "instr", "locate", "position", "hex", "ord", "md5", "sha1", "sha2", "rand",
    "floor", "count", "length", "char_length", "bit_length", "lower", "upper", "reverse",
    "left", "right", "lpad", "rpad", "trim", "ltrim", "rtrim", "space", "repeat", "strcmp",
    "coalesce", "if", "case", "decode", "encode", "compress", "uncompress", "pow", "power",
    "sin", "cos", "tan", "atan", "log", "ln", "sqrt", "abs", "mod", "div", "insert",
    "format", "export_set", "quote", "soundex", "aes_encrypt", "aes_decrypt", "des_encrypt",
    "encrypt", "password", "old_password", "crc32", "conv", "bin", "oct", "least",
    "greatest", "field", "interval", "make_date", "timediff", "regexp_substr", "regexp_like",
    "xmlagg", "xmlelement", "to_char", "to_number", "dbms_random", "ctxsys", "randomblob",
    "zeroblob", "typeof", "load_extension", "pg_catalog", "current_database", "inet_server_addr",
    "quote_ident", "quote_literal", "array_to_string", "query_to_xml", "ord", "system",
}
# Of those, the ones a program or a sentence also calls: flagged only where SQL surrounds them
# (after a quote break or an operator, or as the whole value).
WEAK_FUNCS = {
    "char", "chr", "ascii", "substring", "substr", "mid", "concat", "database", "version",
    "user", "schema", "now", "instr", "locate", "position", "hex", "ord", "md5", "sha1", "sha2",
    "rand", "floor", "count", "length", "char_length", "bit_length", "lower", "upper",
    "reverse", "left", "right", "lpad", "rpad", "trim", "ltrim", "rtrim", "space", "repeat",
    "strcmp", "coalesce", "if", "case", "decode", "encode", "compress", "uncompress", "pow",
    "power", "sin", "cos", "tan", "atan", "log", "ln", "sqrt", "abs", "mod", "div", "insert",
    "format", "quote", "soundex", "password", "crc32", "conv", "bin", "oct", "least",
    "greatest", "field", "interval", "convert", "cast", "exp", "nchar", "typeof", "isnull",
    "nullif", "ifnull", "elt", "iif", "system", "encrypt", "polygon", "position", "export_set",
    "aes_encrypt", "aes_decrypt", "des_encrypt", "old_password", "make_date", "timediff",
    "randomblob", "zeroblob", "to_char", "to_number", "sysdate", "starts_with", "unistr",
    "last_insert_id", "row_count", "found_rows", "connection_id", "json_extract", "json_keys",
    "string_to_array",
}
_CAST_TYPES = {
    "int", "integer", "bigint", "smallint", "int2", "int4", "int8", "text", "varchar", "char",
    "bool", "boolean", "json", "jsonb", "numeric", "decimal", "real", "float", "float4",
    "float8", "double", "double precision", "regclass", "regproc", "oid", "bytea", "inet",
    "money", "xml", "name", "bit",
}
# Catalogues and system objects: naming one is reconnaissance.
_CATALOG = re.compile(
    r"(?<![\w$])(?:information_schema|pg_catalog|pg_shadow|pg_user|pg_database|pg_tables|"
    r"sqlite_master|sqlite_schema|sqlite_temp_master|msysaccessobjects|msysobjects|msysqueries|"
    r"msysrelationships|sysobjects|syscolumns|sysdatabases|sysusers|sysprocesses|"
    r"mysql\.(?:user|db|host|tables_priv|columns_priv|proc)|sys\.(?:tables|columns|objects|"
    r"databases|sql_logins|server_principals|user_summary)|all_tables|all_tab_columns|"
    r"user_tables|user_tab_columns|dba_users|dba_tables|v\$version|v\$instance|"
    r"performance_schema\.\w+|xp_cmdshell|xp_dirtree|xp_regread|sp_password|sp_oacreate|"
    r"sp_makewebtask|sp_addextendedproc|sp_configure|master\.\.\w+|master\.dbo\.\w+|"
    r"@@(?:version|datadir|hostname|basedir|tmpdir|servername|spid|identity|language|"
    r"connections|cpu_busy|microsoftversion|character_set\w*|secure_file_priv|"
    r"version_compile_os|version_comment|sql_mode|innodb_\w+|global\.\w+|session\.\w+))(?![\w$])"
)
# Whole values that are only meaningful to a database or to a number parser's bugs.
_WHOLE_VALUE = re.compile(
    r"(?:tempdb|msdb|northwind|model\.dbo|schema_name|table_name|column_name|"
    r"4294967295|4294967296|2147483647|2147483648|-2147483649|9223372036854775807|"
    r"9223372036854775808|18446744073709551615|18446744073709551616|"
    r"2\.2250738585072011e-308|2\.225073858507201e-308)"
)


def tokenize(text: str) -> list[tuple[str, str]]:
    """(class, text) pairs; whitespace dropped, comments kept as class ``c``."""
    out = []
    append = out.append
    words_pending = None
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        tok = m.group()
        if kind == "ws":
            continue
        if kind == "vc":  # a MySQL /*!50000 ... */ marker: its content is code
            continue
        if kind == "cm":
            append(("c", tok))
            continue
        if kind == "sq" or kind == "dq":
            append(("s", tok))
        elif kind == "bt":
            append(("n", tok))
        elif kind == "num":
            append(("1", tok))
        elif kind == "var":
            append(("v", tok))
        elif kind == "cast":
            t = tok[2:].strip()
            append(("t" if t in _CAST_TYPES else "?", tok))
        elif kind == "word":
            append((_word_class(tok), tok))
        elif kind == "op":
            append(("&" if tok in ("&&", "||") else "o", tok))
        elif kind == "p":
            append((tok, tok))
        elif tok == "{":
            append(("(", tok))
        elif tok == "}":
            append((")", tok))
        else:
            append(("?", tok))
    del words_pending
    # A word directly followed by "(" is a call.
    n = len(out)
    for i in range(n - 1):
        c, tok = out[i]
        if out[i + 1][0] == "(" and c in "nkSXo&U":
            if tok in STRONG_FUNCS or tok.rsplit(".", 1)[-1] in STRONG_FUNCS:
                out[i] = ("F", tok)
            elif c == "n":
                out[i] = ("f", tok)
    return out


def _word_class(w: str) -> str:
    if w in _LOGIC:
        return "&"
    if w == "select":
        return "S"
    if w in _UNION:
        return "U"
    if w in _STMT:
        return "X"
    if w in _OPWORDS:
        return "o"
    if w in _KEYWORDS:
        return "k"
    return "n"


def fold(tokens) -> tuple[str, str]:
    """The class string with comments (``c``) and without them."""
    t = "".join(c for c, _ in tokens)
    return t, t.replace("c", "")


def _without_not(tokens):
    """A NOT right after AND/OR left out: ' or not 1=1 is judged as ' or 1=1."""
    if not any(w == "not" for _, w in tokens):
        return tokens
    return [tok for i, tok in enumerate(tokens)
            if not (tok[1] == "not" and i and tokens[i - 1][0] == "&")]


# Rules over the comment-free class string of the quoted contexts. The first ``s`` is what the
# application quoted; a match means the value escaped it and wrote SQL.
_Q_RULES = re.compile(
    r"^s\)*(?:"
    r"&\(*[s1nvtF]\)*t?o"           # ' or '1'='1 / ' and 1=1 / ') or ('a'='a
    r"|&\(*[1v]\)*(?:$|[;&)]|s$)"   # ' or 1-- / ' or @x
    r"|&\(*[s1n]\)*t?s?$"           # ' or 'x'  (with a comment: see _QC_RULES)
    r"|&\(*[SFfUX(]"                # ' and (select / ' or sleep(5)
    r"|[o&]\(*[SF]"                 # '||(select ... / '+sleep(10)+'
    r"|o\(*[fn]\(*[s1v]"            # '+foo(1) / '=x 1
    r"|\(*S"                        # ' (select ...)  (validated)
    r"|\)*U\(*k?\(*S"               # ' union select / ') union all select
    r"|;\(*[SXU]"                   # '; drop table ...
    r"|;s?$"                        # admin';
    r"|o\(*s\)*(?:$|[o&;])"         # '=' / ' = '
    r"|o\(*[1v]\)*(?:[;&]|$)"       # ' = 1 or / '-0
    r"|t"                           # '...'::jsonb
    r"|k"                           # ' order by / ' having / ' limit
    r"|X"                           # ' waitfor delay / ' exec
    r")"
)
_Q_KEYWORD_OK = {"order", "group", "having", "limit", "procedure", "into", "where", "like",
                 "rlike", "regexp", "as", "union", "is", "between", "in", "sounds", "not",
                 "collate", "escape", "offset", "for", "then", "when", "else", "end", "div",
                 "mod", "from"}
# With comments: a quote closed then commented out (admin'-- / admin'#).
_QC_RULES = re.compile(r"^s\)*(?:c|[;&o]c|&\(*[s1nv]\)*c|\)+c)")

# Rules over the as-is context (a number or identifier slot, or plain text).
_N_RULES = re.compile(
    r"(?:^|[;(])[1nv)]\)*&\(*[1sv(]\)*o\(*[1svnFf(]"  # 1 or 1=1 / x) or (1=1 / 1 and 'x'=f(
    r"|^[1v]\)*&\(*[1v]\)*(?:;|$)"                 # 1 or 1 / 1 or @x
    r"|^[1v]\)*&\(*[FSU(]"                         # 1 and sleep(5) / 1 or (select
    r"|^&\(*[s1v]\)*t?o\(*[s1vnF]"                 # or '{}'::jsonb <@ '{}' / and 1=convert(
    r"|^s\)*t?o\(*[s1]"                            # 'x'!='y
    r"|^\)+[o&]\(*[(s1nv]"                          # ) like (
    r"|^;\(*[SX]"                                   # ;insert ... / ;truncate
    r"|^&\(*F"                                     # or json_extract(...)
    r"|[1sn)v]\)*U\(*(?:S|k\(*S)"                  # 1 union select / x union all select
    r"|^U\(*(?:S|k\(*S)"
    r"|[s)1]t|nt"                                  # '...'::json / password::int
    r"|F\("                                        # sleep( benchmark( load_file(
    r"|^[1v)]\)*o\(*\(*[SF]"                       # 1-(select / 1*sleep(
    r"|^[1]\)*k\(*k?[1n]"                          # 1 order by 5 / 1 limit 1
)


def _statement_at(tokens, i) -> bool:
    """True when tokens[i] starts a plausible SQL statement (not an English sentence)."""
    n = len(tokens)
    c, w = tokens[i]

    def cls(j):
        return tokens[j][0] if j < n else "$"

    def val(j):
        return tokens[j][1] if j < n else ""

    def end_like(j):  # where a statement may stop
        return cls(j) in "$;c)" or val(j) in ("where", "limit", "order", "group", "union",
                                               "having", "join", "into", "procedure", "for")

    if w == "select":
        j = i + 1
        while val(j) in ("all", "distinct", "distinctrow", "top", "sql_calc_found_rows",
                         "straight_join", "high_priority") or (val(j - 1) == "top" and cls(j) == "1"):
            j += 1
        first = cls(j)
        if first == "F" or first == "v" or val(j) in ("*", "null", "case", "if"):
            return True
        if first == "(":
            return cls(j + 1) in "S1sv(F" and _sql_args(tokens, j)
        if first == "f":
            return _sql_args(tokens, j + 1) and (end_like(_close(tokens, j + 1) + 1) or
                                                 cls(_close(tokens, j + 1) + 1) in ",o" or
                                                 val(_close(tokens, j + 1) + 1) in ("from", "as"))
        if first in "1s":
            return cls(j + 1) in "$,;c)o&" or val(j + 1) in ("from", "into", "as", "union", "else",
                                                             "end", "then", "when")
        if first == "o" and val(j) in ("like", "glob") and cls(j + 1) == "(":
            return True         # select like('abc', upper(hex(randomblob(...)))): SQLite
        if first in "nk" or val(j) == "*":
            k = j + 1
            if cls(k) == "." or cls(k) == "o":
                return True
            if cls(k) == ",":
                return True
            if val(k) == "as":
                return True
            if val(k) == "from":
                return cls(k + 1) in "n(" and (end_like(k + 2) or cls(k + 2) in "n,")
            return cls(k) in "$;c" and (first != "n" or cls(j) == "n" and i > 0 and
                                         tokens[i - 1][0] in "U;&(o")
        return False
    if w == "insert" or w == "replace":
        j = i + 1
        if val(j) in ("ignore", "low_priority", "delayed", "high_priority"):
            j += 1
        if val(j) == "into":
            return cls(j + 1) in "nkf" and (cls(j + 2) in "(;$c" or val(j + 2) in ("values", "value", "select", "set"))
        return False
    if w == "update":
        return cls(i + 1) == "n" and val(i + 2) == "set" and cls(i + 3) == "n" and val(i + 4) == "="
    if w == "delete":
        return val(i + 1) == "from" and cls(i + 2) == "n" and end_like(i + 3)
    if w in ("drop", "create", "alter", "truncate", "rename"):
        obj = val(i + 1)
        if w == "truncate" and cls(i + 1) == "n" and end_like(i + 2):
            return True
        if obj in ("table", "database", "schema", "view", "index", "procedure", "function",
                   "trigger", "user", "column", "temporary", "or"):
            if val(i + 2) in ("if", "table") or cls(i + 2) in "fF":
                return True
            if i > 0 and tokens[i - 1][0] == ";" and cls(i + 2) == "n":
                return True     # stacked after a ';': ...; drop function x and (1=1
            return cls(i + 2) == "n" and (end_like(i + 3) or cls(i + 3) in "(," or
                                          val(i + 3) in ("as", "like", "select", "add", "drop",
                                                         "change", "modify", "rename", "set", "on",
                                                         "returns", "cascade", "to"))
        return False
    if w in ("exec", "execute"):
        nxt = cls(i + 1)
        return (nxt in "(vFs" or val(i + 1) in ("immediate", "master", "sp_executesql") or
                val(i + 1).startswith(("xp_", "sp_", "master.")))
    if w == "declare":
        return cls(i + 1) == "v"
    if w == "waitfor":
        return val(i + 1) in ("delay", "time") and cls(i + 2) == "s"
    if w == "shutdown":
        return cls(i + 1) in "$;c"
    if w in ("grant", "revoke"):
        return val(i + 1) in ("all", "select", "insert", "update", "delete", "execute")
    if w in ("use", "show"):
        return i > 0 and tokens[i - 1][0] == ";" and cls(i + 1) in "nk" and cls(i + 2) in "$;c"
    if w in ("load", "handler", "call", "merge", "prepare", "do", "copy", "pragma", "attach"):
        if w == "load":
            return val(i + 1) in ("data", "load_file")
        if w == "copy":
            return cls(i + 1) == "n" and val(i + 2) in ("from", "to") and val(i + 3) == "program"
        return i > 0 and tokens[i - 1][0] == ";" and cls(i + 1) in ("n(vfF" if w == "call" else "n(v")
    return False


def _close(tokens, j) -> int:
    """Index of the parenthesis closing the one at ``j`` (or the last token)."""
    depth = 0
    for k in range(j, min(len(tokens), j + 200)):
        c = tokens[k][0]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return k
    return len(tokens) - 1


def _sql_args(tokens, j) -> bool:
    """The parenthesised list at ``j`` reads as SQL arguments: no two operands side by side."""
    prev = ""
    for k in range(j + 1, min(len(tokens), j + 60)):
        c = tokens[k][0]
        if c == ")":
            return True
        if c in "n1sv" and prev in ("n", "1", "s", "v"):
            return False
        prev = c
    return True


def _check_statements(tokens) -> bool:
    for i, (c, w) in enumerate(tokens):
        if c in "SX":
            if _statement_at(tokens, i):
                return True
        elif c == "k" and w in ("case", "having", "procedure") and i + 1 < len(tokens):
            nxt = tokens[i + 1]
            if w == "case" and nxt[1] == "when":
                return True
            if w == "having" and (nxt[0] in "1s(Fv" or nxt[0] == "n" and i + 2 < len(tokens)
                                  and tokens[i + 2][1] in ("=", "<", ">", "<=", ">=", "<>", "!=", "like")):
                return True
            if w == "procedure" and nxt[1] == "analyse":
                return True
        elif c == "F":
            pass
    return False


def _weak_call_is_code(tokens, t2: str) -> bool:
    """A call of an ambiguous function (concat(, hex(, trim() counts when it is the value."""
    if not tokens:
        return False
    first = tokens[0]
    if first[0] in "fF" and first[1] in WEAK_FUNCS and len(tokens) > 1 and tokens[1][0] == "(":
        if not _sql_args(tokens, 1):
            return False
        k = _close(tokens, 1)
        if k == len(tokens) - 1:
            return True
        nxt = tokens[k + 1]
        return nxt[0] in "o&;c" or nxt[1] in ("from", "as", "union", "or", "and")
    return False


_LITERALS = frozenset(("true", "false", "null", "unknown"))


def _judge_quoted(tokens) -> bool:
    # After the quote, TRUE/FALSE/NULL are values like 1 (' or true-- is ' or 1--).
    tokens = _without_not([("1", w) if c == "k" and w in _LITERALS else (c, w) for c, w in tokens])
    t, t2 = fold(tokens)
    if _QC_RULES.match(t):
        return True
    tokens = [tok for tok in tokens if tok[0] != "c"]
    m = _Q_RULES.match(t2)
    if m:
        # A keyword right after the quote must be one that continues SQL there.
        tail = t2[m.start():m.end()]
        if "U" in tail:
            return True
        if tail.endswith("k"):
            idx = m.end() - 1
            w = tokens[idx][1] if idx is not None else ""
            return w in _Q_KEYWORD_OK and _keyword_continues(tokens, idx)
        if tail.endswith("X") or tail.endswith("S"):
            idx = m.end() - 1
            if idx is not None and _statement_at(tokens, idx):
                return True
            if idx is not None and tokens[idx - 1][0] == ";":
                return True
            if idx is not None and idx >= 2 and tokens[idx - 1][0] == "(" and tokens[idx - 2][0] in "o&":
                return True
            if tail.endswith("S") and re.match(r"^s\(*S[n1v*]?s?$", t2) and \
                    len(tokens[0][1]) <= 14 and " " not in tokens[0][1]:
                return True
            return tail.endswith("S") and idx is not None and idx + 1 < len(tokens) and \
                tokens[idx - 1][0] in "(o&" and tokens[idx + 1][0] in "F1v("
        return True
    return _check_statements(tokens[1:]) or "F(" in t2[1:] and _strong_call(tokens)


def _keyword_continues(tokens, idx) -> bool:
    w = tokens[idx][1]
    nxt = tokens[idx + 1] if idx + 1 < len(tokens) else ("$", "")
    if w in ("order", "group"):
        return nxt[1] == "by"
    if w in ("having", "where"):
        return nxt[0] in "1snv(F"
    if w == "limit":
        return nxt[0] == "1"
    if w == "into":
        return nxt[1] in ("outfile", "dumpfile") or nxt[0] == "v"
    if w == "procedure":
        return nxt[1] == "analyse"
    if w in ("like", "rlike", "regexp", "is", "between", "in", "not", "sounds", "div", "mod"):
        return nxt[0] in "s1v(Fk" and (nxt[0] != "k" or nxt[1] in ("null", "true", "false", "not"))
    if w == "from":
        return nxt[0] == "n" and (idx + 2 >= len(tokens) or tokens[idx + 2][0] in ";c)")
    return nxt[0] in "$;c"


def _strong_call(tokens) -> bool:
    for i, (c, w) in enumerate(tokens):
        if c == "F" and w not in WEAK_FUNCS and w.rsplit(".", 1)[-1] not in WEAK_FUNCS:
            return True
    return False


_BARE_SQL = re.compile(
    r"(?<![\w$])(?:pg_sleep|load_file|extractvalue|updatexml|group_concat|concat_ws|name_const|"
    r"make_set|sqlite_version|dbms_pipe|utl_inaddr|utl_http|sys_eval|sys_exec|pg_read_file|"
    r"benchmark\s*\(|into\s+(?:out|dump)file)(?![\w$])"
    r"|\d\.e[(.][a-z(]|\d\.e\(\d"
    r"|(?<![\w$])where\s+(\d+)\s*=\s*\1(?!\w)|(?<![\w$])where\s+'(\w*)'\s*=\s*'\2(?:'|$)"
    r"|^\s*(?:order|group)\s+by\s+\d+\s*(?:$|--|#|/\*|;)"
    r"|(?:^|[(,])\s*(\d{2,})\s*=\s*\3\s*(?:[),]|$)"      # (4638=4638)*1 / iif(4638=4638,1,1/0)
    r"|(?:^|[\s\d)`\"'])as\s*[`\"'][^`\"']{0,60}[`\"']\s*from\b|\bas\s*[`\"']\s*from\b"
    r"|\[\s*\$(?:ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|not|nor|or|and|elemmatch|expr|"
    r"jsonschema|text|type|size|all|mod|options)\s*\]"
)
_OBFUSCATED = re.compile(r"[SUX&]c(?!$)|c[SUX]")


def _judge_plain(tokens, text: str) -> bool:
    tokens = _without_not(tokens)
    t, t2 = fold(tokens)
    if _OBFUSCATED.search(t) and ("/*" in text):
        return True
    tokens = [tok for tok in tokens if tok[0] != "c"]
    for m in _N_RULES.finditer(t2):
        seg = t2[m.start():m.end()]
        if seg.endswith("F("):
            # A known function alone counts only when it is a strong one.
            if _strong_call(tokens) or _weak_call_is_code(tokens, t2):
                return True
            continue
        return True
    if _check_statements(tokens):
        return True
    if _weak_call_is_code(tokens, t2):
        return True
    return False


_COMMENT_RE = re.compile(r"/\*(?:[^*]|\*(?!/))*(?:\*/|$)")
_MONGO = re.compile(r"(?:^|\[)\$(?:ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|not|nor|or|and|"
                    r"elemmatch|expr|jsonschema|text|type|size|all|mod|options|function|"
                    r"accumulator|lookup)\b")


def detect(text: str, kind: str = "") -> str | None:
    """The name of the first rule that judges ``text`` (lower-case, decoded) SQL, else None."""
    if kind == "name" or kind == "jsonkey":
        if _MONGO.search(text):
            return "mongo-operator"
    if _CATALOG.search(text):
        return "catalog"
    if _BARE_SQL.search(text):
        return "sql-only-name"
    stripped = text.strip()
    if _WHOLE_VALUE.fullmatch(stripped):
        return "magic-value"
    tokens = tokenize(text)
    if _judge_plain(tokens, text):
        return "plain"
    if "'" in text and _judge_quoted(tokenize("'" + text + "'")):
        return "single-quote"
    if '"' in text and _judge_quoted(tokenize('"' + text + '"')):
        return "double-quote"
    if "`" in text and _judge_quoted([("s", "")] + tokenize(text.split("`", 1)[1])):
        return "backtick"
    if "/*" in text:
        joined = _COMMENT_RE.sub("", text)
        if joined != text and detect_joined(joined):
            return "comment-joined"
    return None


def detect_joined(text: str) -> bool:
    tokens = tokenize(text)
    if _judge_plain(tokens, text):
        return True
    if "'" in text and _judge_quoted(tokenize("'" + text + "'")):
        return True
    return False
