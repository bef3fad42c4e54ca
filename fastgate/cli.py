"""The `fastgate` command: run, check, audit, demo, hash-key."""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys


def _setup_logging():
    logging.basicConfig(
        level=os.environ.get("FASTGATE_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load_or_report(path):
    """(config, None) or (None, every error as a KEY.PATH line), from the one validation
    that reloads and `PUT /config` use too (fastgate.config.validate)."""
    from fastgate.config import ConfigError, validate
    try:
        return validate(path), None
    except ConfigError as exc:
        return None, exc.errors


def cmd_check(args) -> int:
    config, errors = _load_or_report(args.config)
    if errors:
        for err in errors:
            print(err)
        return 2
    print(f"{args.config}: ok ({len(config.routes)} routes, {len(config.upstreams)} upstreams)")
    return 0


def cmd_run(args) -> int:
    _setup_logging()
    config, errors = _load_or_report(args.config)
    if errors:
        for err in errors:
            print(err, file=sys.stderr)
        return 2
    _raise_fd_limit(config.limits.max_connections)
    workers = _parse_workers(args.workers)
    if workers is None:
        print(f"--workers: expected a positive number or 'auto', got {args.workers!r}",
              file=sys.stderr)
        return 2
    if workers > 1:
        from fastgate.server.workers import run_supervisor
        return run_supervisor(config, os.path.abspath(args.config), workers)
    from fastgate.server.app import run_gateway
    return run_gateway(config, os.path.abspath(args.config))


def _raise_fd_limit(max_connections: int):
    """Each client connection may hold an upstream connection too: ask for enough
    descriptors (up to the hard limit), as nginx's worker_rlimit_nofile does."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 2 * max_connections + 1024
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        if soft != resource.RLIM_INFINITY and soft < max_connections + 64:
            logging.getLogger("fastgate").warning(
                "open-file limit %d is below limits.max_connections=%d; raise `ulimit -n`",
                soft, max_connections)
    except (ImportError, ValueError, OSError):
        pass


def _parse_workers(value):
    if value is None:
        return 1
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 1 else None


def cmd_audit(args) -> int:
    import orjson

    from fastgate.audit import findings
    from fastgate.config import ConfigError, load_config
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for err in exc.errors:
            print(err, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{args.config}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return 2
    found = findings(config)
    if args.format == "json":
        print(orjson.dumps({"findings": [
            {"severity": sev, "key": line.split(": ", 1)[0], "message": line.split(": ", 1)[-1]}
            for sev, line in found]}).decode())
    else:
        for sev, line in found:
            print(f"{sev}: {line}")
        if not found:
            print(f"{args.config}: no findings")
    return 1 if any(sev == "high" for sev, _ in found) else 0


def cmd_demo(args) -> int:
    _setup_logging()
    from fastgate.demo import run_demo
    return run_demo(args.port, args.admin_port)


def cmd_hash_key(args) -> int:
    data = sys.stdin.read()
    key = data.strip("\r\n")
    if not key:
        print("hash-key: no key on standard input", file=sys.stderr)
        return 2
    print("sha256:" + hashlib.sha256(key.encode()).hexdigest())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgate", description="FastGate API gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="serve with a config file")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--workers", default=None, help="number of worker processes, or 'auto'")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check", help="validate a config file (exit 0 valid, 2 invalid)")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("audit", help="security findings (exit 1 if any is high)")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_audit)
    p = sub.add_parser("demo", help="run the gateway with a built-in sample upstream and config")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--admin-port", type=int, default=None,
                   help="admin API and portal (default: --port + 1)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("hash-key", help="read an API key on stdin, print its sha256: hash")
    p.set_defaults(func=cmd_hash_key)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
