"""Header names the proxy never forwards as received.

Request side: hop-by-hop headers (RFC 9110 7.6.1), framing the proxy redoes itself, and the
headers the gateway sets authoritatively (forwarding, ids, identity). Response side:
hop-by-hop and framing. Policies extend these per route (auth: forwarded claims; transform:
removed/replaced headers); compile folds the extensions into one frozenset per route, so
the hot path does a single set lookup per header.
"""
DROP_REQUEST_HEADERS = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-authorization", b"content-length", b"host", b"expect",
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id",
    b"traceparent", b"x-consumer-name", b"x-consumer-groups",
))
DROP_RESPONSE_HEADERS = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"content-length", b"proxy-authenticate", b"x-request-id",
))
