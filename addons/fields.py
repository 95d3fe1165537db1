"""HTTP field facts shared by the profile loader and the exchange."""

# RFC 9110 section 7.6.1: meant for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Fields the transport sets itself: nothing else may put a value there.
TRANSPORT_OWNED = frozenset({"host", "content-length"})
