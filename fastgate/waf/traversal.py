"""Path traversal and local file inclusion: ``..`` segments after normalisation, and names of
files an application never serves (OS files, credentials, VCS metadata, backups).

Normalisation before judging: backslashes are slashes, ``;params`` are dropped from
segments (``..;/``), runs of slashes collapse, and overlong UTF-8 / %u / double encodings were
already decoded by the caller (fastgate._core.wafdecode).
"""
from __future__ import annotations

import re

__all__ = ("detect", "normalize_path")

# Targets of file disclosure, anywhere in a value (after a slash, a backslash or at the start).
_SENSITIVE = re.compile(
    r"(?:^|[/\\=:\s'\"(<>|;&~]|file:)(?:"
    r"etc/(?:passwd|shadow|master\.passwd|group|gshadow|sudoers|hosts|issue|motd|crontab|"
    r"fstab|resolv\.conf|httpd|apache2|nginx|mysql/my\.cnf|my\.cnf|ssh/|security/|pam\.d|"
    r"environment|profile|bashrc|hostname|subuid|subgid|php\w{0,3}/|init\.d|rc\.d|"
    r"network/|sysconfig|apt/|yum\.repos|ld\.so|inittab|exports|aliases|ldap|krb5|"
    r"opasswd|pwd\.db|spwd\.db|login\.defs|redhat-release|debian_version|lsb-release|"
    r"os-release|machine-id|ssl/|pki/|kubernetes|docker|systemd|cron)"
    r"|proc/(?:self|\d+|version|cmdline|environ|mounts|net|cpuinfo|meminfo|interrupts|"
    r"sched_debug|kcore|config\.gz|modules|partitions|stat|kallsyms|devices|filesystems)"
    r"|sys/(?:class|kernel|devices|block|bus|firmware|module|power|fs/)"
    r"|dev/(?:tcp|udp|mem|kmem|port|shm|fd)/?"
    r"|var/(?:log/|lib/(?:mysql|docker|kubelet)|run/secrets|mail|spool/cron|www/\.)"
    r"|root/|home/[\w.-]{1,32}/\.|usr/local/(?:apache|etc|nginx)|"
    r"(?:[a-z]:[/\\]{1,2})?(?:windows|winnt)[/\\]{1,2}(?:win\.ini|system\.ini|system32|syswow64|"
    r"repair|panther|debug|temp|php\.ini)|boot\.ini|win\.ini|system\.ini|autoexec\.bat|"
    r"(?:[a-z]:[/\\]{1,2})?inetpub|"
    r"\.ssh/|id_rsa|id_dsa|id_ecdsa|id_ed25519|authorized_keys|known_hosts|\.htpasswd|"
    r"\.htaccess|\.git/(?:config|head|index|logs|refs|objects)|\.git$|\.svn/|\.hg/|\.bzr/|"
    r"\.env(?:\.\w{1,12})?$|\.aws/|\.azure/|\.gcloud|\.kube/|\.docker/|\.npmrc|\.pypirc|"
    r"\.netrc|\.pgpass|\.my\.cnf|\.bash_history|\.zsh_history|\.history|\.mysql_history|"
    r"\.psql_history|\.viminfo|\.bashrc|\.bash_profile|\.profile$|\.boto|\.s3cfg|\.git-credentials|"
    r"\.gitconfig|\.docker(?:/|$)|\.vscode/|\.idea/|\.ds_store|web\.config|wp-config\.php|"
    r"localsettings\.php|config\.inc\.php|configuration\.php|settings\.php|database\.yml|"
    r"secrets\.ya?ml|credentials(?:\.json|\.xml)?$|server\.xml|tomcat-users\.xml|"
    r"applicationhost\.config|php\.ini|httpd\.conf|nginx\.conf|my\.ini|"
    r"web-inf/|meta-inf/|[\w.-]{1,40}\.(?:sql|bak|old|orig|swp|sav|backup)(?:\.(?:gz|zip|tar|bz2|7z))?$|"
    r"[\w.-]{1,40}\.sql\.(?:gz|zip|tar|bz2|7z)"
    r")"
)
# Segments of a request path that name a hidden, backup or log file.
_PATH_RESTRICTED = re.compile(
    r"(?:^|/)(?:\.(?!well-known(?:/|$))[\w-][^/]{0,80}"
    r"|[^/]{1,80}\.(?:bak|old|orig|swp|swo|sav|backup|sql|log|ini|conf|cfg|env|pem|key|"
    r"dist|inc|tmp|temp)(?:\.\w{1,4})?|[^/]{1,80}~|@fs|@id|__x00__|wp-config[^/]{0,20})(?:/|$)"
)
_DOTDOT = re.compile(r"(?:^|/)\.{2,}(?=/|$)")


def normalize_path(p: str) -> str:
    """Backslashes as slashes, ``;`` path parameters dropped, slashes collapsed."""
    if "\\" in p:
        p = p.replace("\\", "/")
    if ";" in p:
        p = re.sub(r";[^/]{0,200}", "", p)
    if "//" in p:
        p = re.sub(r"/{2,}", "/", p)
    return p


def _escapes_root(p: str) -> bool:
    depth = 0
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            depth -= 1
            if depth < 0:
                return True
        elif set(seg) == {"."}:
            return True  # "..." and longer: Windows resolves them upwards
        else:
            depth += 1
    return False


def detect(text: str, kind: str = "") -> str | None:
    """Rule name when ``text`` (decoded, lower-case) reaches outside the web root, else None."""
    if "0x" in text:  # hex-spelled dots and slashes (0x2e0x2e0x2f)
        text = re.sub(r"0x2e", ".", re.sub(r"0x2f", "/", re.sub(r"0x5c", "\\\\", text)))
    p = normalize_path(text)
    if ".." in p:
        if kind == "path":
            # A client may send /a/../b; only climbing above the root, or hiding the dots
            # (encoded, backslashes, path parameters) is an attack.
            if _escapes_root(p) or (p != text and _DOTDOT.search(p)):
                return "dotdot"
        elif _DOTDOT.search(p):
            n = len(_DOTDOT.findall(p))
            spaces = " " in p.strip()
            if not spaces or n >= 3 or re.match(r"\s*\.{2,}/[^\s/]", p):
                return "dotdot"
            if _SENSITIVE.search(p):
                return "dotdot-target"
        elif "..." in p and "/" in p and re.search(r"(?:^|/)\.{3,}(?:/|$)", p):
            return "dotdot"
    if _SENSITIVE.search(p):
        return "sensitive-file"
    if kind == "path" and _PATH_RESTRICTED.search(p):
        return "restricted-path"
    if kind == "filename" and (_PATH_RESTRICTED.search("/" + p) or p.startswith(".")):
        return "restricted-filename"
    return None
