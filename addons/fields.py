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

# Fields the transport owns: it sets Host and Content-Length itself, and it sends a body whole
# once it holds all of it, so an Expect: 100-continue would only make it wait for a 100 that
# some upstreams never send.
TRANSPORT_OWNED = frozenset({"host", "content-length", "expect"})
