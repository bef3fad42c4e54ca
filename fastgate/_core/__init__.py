"""Compiled per-request hot path: HTTP/1.1 parsing, routing, token buckets, writers."""
