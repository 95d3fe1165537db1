"""Profiles for the loader's tests (test_profile.py) and the schema agreement (test_schema.py).

Each invalid profile breaks one rule: the loader must report exactly one problem, at `path`,
with `message` in it. `LOADER_ONLY` are rules JSON Schema cannot express; each says why.
The profiles are loaded from a folder that `prepare()` fills: relative paths and
`${file:...}` resolve there, and the environment holds the variables they use.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

SET_VAR = "AMBASSADOR_TEST_TOKEN"
SET_VALUE = "s3cret-token"
EMPTY_VAR = "AMBASSADOR_TEST_EMPTY"
UNSET_VAR = "AMBASSADOR_TEST_UNSET"
SECRET_FILE = "secrets/pw"
SECRET_VALUE = "pass word"
CA_FILE = "certs/ca.pem"  # a certificate with its key: the loader checks that TLS can use it
EXAMPLES = Path(__file__).resolve().parent.parent / "profiles" / "examples"


def prepare(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "secrets").mkdir()
    (folder / SECRET_FILE).write_text(SECRET_VALUE + "\n")
    (folder / "certs").mkdir()
    (folder / CA_FILE).write_text((EXAMPLES / "client.pem").read_text() + (EXAMPLES / "client.key").read_text())
    monkeypatch.setenv(SET_VAR, SET_VALUE)
    monkeypatch.setenv(EMPTY_VAR, "")
    monkeypatch.delenv(UNSET_VAR, raising=False)


def profile(upstream: str = "", top: str = "") -> str:
    """The `billing` upstream with extra keys (YAML lines), and extra top-level keys."""
    return (
        "upstreams:\n"
        "  billing:\n"
        "    url: http://127.0.0.1:9/v2\n"
        "    match: {path_prefix: /billing}\n"
        + textwrap.indent(textwrap.dedent(upstream), "    ")
        + textwrap.dedent(top)
    )


def two_upstreams(first_match: str, second_match: str) -> str:
    return f"""\
upstreams:
  a: {{url: "http://127.0.0.1:9", match: {first_match}}}
  b: {{url: "http://127.0.0.1:9", match: {second_match}}}
"""


@dataclass(frozen=True)
class Valid:
    id: str
    text: str


@dataclass(frozen=True)
class Invalid:
    id: str
    text: str
    path: str
    message: str
    why_not_in_schema: str | None = None  # for LOADER_ONLY


VALID = [
    Valid("minimal", profile()),
    Valid("limit-every-key", profile("retry: {budget: 20%}\nlimit: {rate: 50/s, burst: 5, quota: 10000/d, concurrency: 8, queue: 100, max_wait: 10s, follow_upstream: false}\n")),
    Valid("limit-bare-follows-the-upstream", profile("limit:\n")),
    Valid("root-prefix-and-proxy-host", profile().replace("{path_prefix: /billing}", "{path_prefix: /, host: Billing.Internal:8443}")),
    Valid("durations-as-numbers", profile("timeout: 2.5\ncache: {ttl: 0, stale_if_error: 90}\n")),
    Valid("bare-sections-use-defaults", profile("tls:\ncache:\nbreaker:\nretry:\nasync:\n")),
    Valid("empty-sections-use-defaults", profile("tls: {}\ncache: {}\nbreaker: {}\nretry: {}\nasync: {}\n")),
    Valid(
        "every-key",
        profile(
            f"""\
            timeout: 10s
            tls: {{verify: false, ca: {CA_FILE}, client_cert: {CA_FILE}, client_key: {CA_FILE}}}
            auth:
              type: oauth2_client_credentials
              token_url: https://auth.example.com/oauth/token
              client_id: "${{{SET_VAR}}}"
              client_secret: "${{file:{SECRET_FILE}}}"
              scope: read write
              auth_style: body
            cache: {{ttl: 60s, stale_if_error: 10m, max_bytes: 64MB, store: redis}}
            breaker: {{fail_max: 5, reset_timeout: 30s, failure_statuses: [500, 502, 503, 504], half_open_max: 1}}
            retry: {{attempts: 3, backoff: 100ms, statuses: [502, 503, 504], methods: [GET, HEAD, OPTIONS, PUT, DELETE, POST]}}
            async: {{keep: 1h}}
            soap: {{namespace: "http://legacy.example.com/ns", version: "1.2"}}
            """,
            """\
            aggregates:
              /dashboard/{user_id}:
                user: billing:/users/{user_id}
                orders: billing:/orders?user={user_id}&page={query.page}&sort={query.sort-by}
            state: redis://127.0.0.1:6379/0
            """,
        ),
    ),
    Valid("auth-bearer", profile(f'auth: {{type: bearer, token: "${{{SET_VAR}}}"}}\n')),
    Valid("auth-header", profile("auth: {type: header, name: X-Api-Key, value: abc}\n")),
    Valid("auth-query", profile("auth: {type: query, name: api_key, value: abc}\n")),
    Valid("auth-basic-from-file", profile(f'auth: {{type: basic, username: svc, password: "${{file:{SECRET_FILE}}}"}}\n')),
    Valid(
        "substitutions-in-typed-values",
        profile(
            f"""\
            timeout: ${{{UNSET_VAR}:-5s}}
            tls: {{verify: "${{{UNSET_VAR}:-false}}"}}
            breaker: {{fail_max: "${{{UNSET_VAR}:-7}}", failure_statuses: [500, "${{{EMPTY_VAR}:-503}}"]}}
            retry: {{methods: ["${{{UNSET_VAR}:-GET}}"]}}
            soap: {{namespace: "urn:${{{SET_VAR}}}", version: "${{{UNSET_VAR}:-1.2}}"}}
            """
        ),
    ),
    Valid("url-from-environment", profile('soap: {namespace: "urn:x", version: 1.2}\n').replace("http://127.0.0.1:9/v2", f"${{{UNSET_VAR}:-http://127.0.0.1:9}}")),
    Valid("empty-status-lists", profile("breaker: {failure_statuses: []}\nretry: {statuses: []}\n")),
    Valid("size-units", profile("cache: {max_bytes: 512kb, store: memory}\n")),
    Valid("size-in-bytes", profile("cache: {max_bytes: 1048576, store: 'sqlite:cache/db.sqlite'}\n")),
    Valid("no-aggregates-listed", profile(top="aggregates:\n")),
    Valid(
        "allowed-origins-and-hosts",
        profile(top=f'allowed_origins: [https://app.example.com, "HTTP://Localhost:3000", "${{{UNSET_VAR}:-http://[::1]:8080}}"]\nallowed_hosts: [ambassador.internal, 10.0.0.5]\n'),
    ),
    Valid("empty-allowed-lists", profile(top="allowed_origins: []\nallowed_hosts:\n")),
    Valid("egress-proxy", profile("proxy: http://proxy.corp.example:3128\n")),
    Valid("egress-proxy-with-credentials", profile(f'proxy: "http://svc:${{{SET_VAR}}}@proxy.corp.example:3128/"\n')),
    Valid(
        "hedge-failover-fallback",
        profile(
            "hedge: {after: 50ms, max: 2}\n"
            "failover: [https://b.partner.example.com/v2, 'http://127.0.0.1:10']\n"
            "fallback: {status: 200, headers: {Content-Type: application/json}, body: '{\"items\": []}'}\n"
        ),
    ),
    Valid("bare-hedge-and-bodiless-fallback", profile("hedge:\nfallback: {status: 503}\n")),
    Valid(
        "yaml-merge-keys-may-override",
        """\
upstreams:
  a: &base {url: "http://127.0.0.1:9", match: {path_prefix: /a}, timeout: 5s}
  b: {<<: *base, match: {path_prefix: /b}}
""",
    ),
]

INVALID = [
    # limit and the retry budget
    Invalid("limit-rate-per-day", profile("limit: {rate: 5/d}\n"), "upstreams.billing.limit.rate", "must be a count per window like 50/s or 50/m or 50/h, got '5/d'"),
    Invalid("limit-rate-zero", profile("limit: {rate: 0/s}\n"), "upstreams.billing.limit.rate", "must allow at least 1"),
    Invalid("limit-quota-per-second", profile("limit: {quota: 100/s}\n"), "upstreams.billing.limit.quota", "must be a count per window like 50/m or 50/h or 50/d"),
    Invalid("limit-burst-without-rate", profile("limit: {burst: 5}\n"), "upstreams.billing.limit.burst", "needs rate"),
    Invalid("limit-concurrency-zero", profile("limit: {concurrency: 0}\n"), "upstreams.billing.limit.concurrency", "must be an integer >= 1"),
    Invalid("limit-unknown-key", profile("limit: {rates: 5/s}\n"), "upstreams.billing.limit.rates", "unknown key (did you mean 'rate'?)"),
    Invalid("retry-budget-not-a-percentage", profile("retry: {budget: 0.2}\n"), "upstreams.billing.retry.budget", "must be a percentage like 20%"),
    # the document and its top level
    Invalid("empty-file", "", "upstreams", "is required (the profile is empty)"),
    Invalid("not-a-mapping", "- billing\n", "", "must be a mapping, got list"),
    Invalid("no-upstreams", "state: redis://127.0.0.1:6379/0\n", "upstreams", "is required"),
    Invalid("no-upstream-in-upstreams", "upstreams: {}\n", "upstreams", "must map one or more upstream names"),
    Invalid("unknown-top-level-key", profile(top="upstream: {}\n"), "upstream", "unknown key (did you mean 'upstreams'?)"),
    Invalid("allowed-origins-not-a-list", profile(top="allowed_origins: https://app.example.com\n"), "allowed_origins", "must be a list"),
    Invalid("allowed-origin-with-path", profile(top="allowed_origins: [https://a.example.com, https://b.example.com/app]\n"), "allowed_origins[1]", "must be an origin like"),
    Invalid("allowed-origin-null", profile(top="allowed_origins: ['null']\n"), "allowed_origins[0]", "must be an origin like"),
    Invalid("allowed-origin-other-scheme", profile(top="allowed_origins: ['file://x']\n"), "allowed_origins[0]", "must be an origin like"),
    Invalid("allowed-host-with-port", profile(top="allowed_hosts: [a.internal, 'b.internal:8080']\n"), "allowed_hosts[1]", "must be a host name without :port"),
    Invalid("allowed-host-not-a-name", profile(top="allowed_hosts: ['bad host!']\n"), "allowed_hosts[0]", "must be a host name"),
    Invalid("state-not-redis", profile(top="state: http://127.0.0.1:6379\n"), "state", "must be a redis://host:port/db URL"),
    # an upstream
    Invalid("bad-upstream-name", profile().replace("billing:", "Billing:"), "upstreams.Billing", "upstream names must match [a-z0-9][a-z0-9_-]*"),
    Invalid("upstream-not-a-mapping", "upstreams:\n  billing: http://127.0.0.1:9\n", "upstreams.billing", "must be a mapping, got str"),
    Invalid("url-missing", "upstreams:\n  billing: {match: {path_prefix: /b}}\n", "upstreams.billing.url", "is required"),
    Invalid("match-missing", "upstreams:\n  billing: {url: 'http://127.0.0.1:9'}\n", "upstreams.billing.match", "is required"),
    Invalid("unknown-upstream-key", profile("timeuot: 5s\n"), "upstreams.billing.timeuot", "unknown key (did you mean 'timeout'?)"),
    Invalid("url-not-http", profile().replace("http://127.0.0.1:9", "ftp://127.0.0.1:9"), "upstreams.billing.url", "must be an http:// or https:// URL with a host"),
    Invalid("url-with-query", profile().replace("/v2", "/v2?x=1"), "upstreams.billing.url", "must not have a query or fragment"),
    Invalid("url-with-credentials", profile().replace("http://", "http://user:pw@"), "upstreams.billing.url", "must not carry credentials; use the auth section"),
    Invalid("timeout-bad-unit", profile("timeout: 5x\n"), "upstreams.billing.timeout", "must be a duration like 250ms, 5s, 2m, 1h or a number of seconds, got '5x'"),
    Invalid("timeout-zero", profile("timeout: 0s\n"), "upstreams.billing.timeout", "must be greater than zero, got '0s'"),
    Invalid("timeout-negative", profile("timeout: -1\n"), "upstreams.billing.timeout", "must be a duration of zero or more, got int -1"),
    # match
    Invalid("match-empty", profile().replace("{path_prefix: /billing}", "{}"), "upstreams.billing.match", "needs at least one of path_prefix, host"),
    Invalid("match-unknown-key", profile().replace("/billing}", "/billing, hots: x}"), "upstreams.billing.match.hots", "unknown key (did you mean 'host'?)"),
    Invalid("prefix-relative", profile().replace("/billing}", "billing}"), "upstreams.billing.match.path_prefix", "must start with '/'"),
    Invalid("prefix-dot-segment", profile().replace("/billing}", "/a/../billing}"), "upstreams.billing.match.path_prefix", "must be a plain path without"),
    Invalid("prefix-reserved", profile().replace("/billing}", "/_ambassador/billing}"), "upstreams.billing.match.path_prefix", "/_ambassador/ is reserved for the ambassador"),
    Invalid("host-not-a-host-name", profile().replace("{path_prefix: /billing}", "{host: 'bad host!'}"), "upstreams.billing.match.host", "must be a host name, optionally with :port"),
    # tls
    Invalid("tls-verify-quoted", profile('tls: {verify: "yes"}\n'), "upstreams.billing.tls.verify", "must be true or false, got 'yes'"),
    Invalid("tls-unknown-key", profile("tls: {verfy: false}\n"), "upstreams.billing.tls.verfy", "unknown key (did you mean 'verify'?)"),
    Invalid("tls-key-without-cert", profile(f"tls: {{client_key: {CA_FILE}}}\n"), "upstreams.billing.tls.client_key", "needs client_cert"),
    # proxy: messages never repeat the URL, which may hold a password
    Invalid("proxy-https-scheme", profile("proxy: https://svc:hunter2@proxy.corp.example:3128\n"), "upstreams.billing.proxy", "must be an http:// proxy URL with a host"),
    Invalid("proxy-with-path", profile("proxy: http://svc:hunter2@proxy.corp.example:3128/path\n"), "upstreams.billing.proxy", "must not have a path, query or fragment"),
    Invalid("proxy-not-a-string", profile("proxy: {host: proxy.corp.example}\n"), "upstreams.billing.proxy", "must be a string, got dict"),
    # auth
    Invalid("auth-not-a-mapping", profile("auth: bearer\n"), "upstreams.billing.auth", "must be a mapping, got str"),
    Invalid("auth-without-type", profile("auth: {token: abc}\n"), "upstreams.billing.auth.type", "is required: one of bearer, header, query, basic, oauth2_client_credentials"),
    Invalid("auth-unknown-type", profile("auth: {type: digest}\n"), "upstreams.billing.auth.type", "must be one of bearer, header, query, basic, oauth2_client_credentials, got 'digest'"),
    Invalid("bearer-without-token", profile("auth: {type: bearer}\n"), "upstreams.billing.auth.token", "is required"),
    Invalid("bearer-with-header-keys", profile("auth: {type: bearer, token: abc, name: X-Token}\n"), "upstreams.billing.auth.name", "unknown key"),
    Invalid("bearer-token-a-number", profile("auth: {type: bearer, token: 12345}\n"), "upstreams.billing.auth.token", "must be a string, got int (quote it to keep it as written)"),
    Invalid("bearer-token-with-newline", profile("auth:\n  type: bearer\n  token: |\n    abc\n"), "upstreams.billing.auth.token", "must not contain line breaks or NUL characters"),
    Invalid("header-name-with-space", profile("auth: {type: header, name: X Api Key, value: abc}\n"), "upstreams.billing.auth.name", "must be an HTTP header name"),
    Invalid("query-value-empty", profile('auth: {type: query, name: api_key, value: ""}\n'), "upstreams.billing.auth.value", "must not be empty"),
    Invalid("basic-username-with-colon", profile("auth: {type: basic, username: 'svc:x', password: pw}\n"), "upstreams.billing.auth.username", "must not contain ':' (RFC 7617)"),
    Invalid(
        "oauth2-token-url-without-scheme",
        profile("auth: {type: oauth2_client_credentials, token_url: auth.example.com/token, client_id: a, client_secret: b}\n"),
        "upstreams.billing.auth.token_url",
        "must be an http:// or https:// URL with a host",
    ),
    Invalid(
        "oauth2-auth-style",
        profile("auth: {type: oauth2_client_credentials, token_url: 'https://a/t', client_id: a, client_secret: b, auth_style: header}\n"),
        "upstreams.billing.auth.auth_style",
        "must be one of basic, body, got 'header'",
    ),
    # cache
    Invalid("cache-ttl-in-words", profile("cache: {ttl: 1 minute}\n"), "upstreams.billing.cache.ttl", "must be a duration like"),
    Invalid("cache-size-unit", profile("cache: {max_bytes: 64XB}\n"), "upstreams.billing.cache.max_bytes", "must be a size like 512KB, 64MB or a number of bytes, got '64XB'"),
    Invalid("cache-size-zero", profile("cache: {max_bytes: 0}\n"), "upstreams.billing.cache.max_bytes", "must be greater than zero, got int 0"),
    Invalid("cache-store-unknown", profile("cache: {store: disk}\n"), "upstreams.billing.cache.store", "must be memory, sqlite:PATH or redis, got 'disk'"),
    Invalid("cache-unknown-key", profile("cache: {ttl: 1s, stale_if_eror: 1m}\n"), "upstreams.billing.cache.stale_if_eror", "unknown key (did you mean 'stale_if_error'?)"),
    # breaker
    Invalid("breaker-fail-max-zero", profile("breaker: {fail_max: 0}\n"), "upstreams.billing.breaker.fail_max", "must be an integer >= 1, got 0"),
    Invalid("breaker-fail-max-word", profile("breaker: {fail_max: five}\n"), "upstreams.billing.breaker.fail_max", "must be an integer, got 'five'"),
    Invalid("breaker-status-out-of-range", profile("breaker: {failure_statuses: [500, 700]}\n"), "upstreams.billing.breaker.failure_statuses", "must list HTTP status codes (100-599), got int 700"),
    Invalid("breaker-statuses-not-a-list", profile("breaker: {failure_statuses: 500}\n"), "upstreams.billing.breaker.failure_statuses", "must be a list of HTTP status codes, got int 500"),
    Invalid("breaker-half-open-zero", profile("breaker: {half_open_max: 0}\n"), "upstreams.billing.breaker.half_open_max", "must be an integer >= 1, got 0"),
    Invalid("breaker-reset-timeout-zero", profile("breaker: {reset_timeout: 0}\n"), "upstreams.billing.breaker.reset_timeout", "must be greater than zero, got int 0"),
    # retry
    Invalid("retry-attempts-too-many", profile("retry: {attempts: 21}\n"), "upstreams.billing.retry.attempts", "must be an integer between 1 and 20, got 21"),
    Invalid("retry-methods-lower-case", profile("retry: {methods: [get]}\n"), "upstreams.billing.retry.methods", "must list HTTP methods (DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE), got 'get'"),
    Invalid("retry-methods-empty", profile("retry: {methods: []}\n"), "upstreams.billing.retry.methods", "must be a non-empty list of HTTP methods"),
    Invalid("retry-backoff-negative", profile("retry: {backoff: -1s}\n"), "upstreams.billing.retry.backoff", "must be a duration like"),
    # async and soap
    Invalid("async-keep-zero", profile("async: {keep: 0s}\n"), "upstreams.billing.async.keep", "must be greater than zero"),
    Invalid("async-unknown-key", profile("async: {ttl: 1h}\n"), "upstreams.billing.async.ttl", "unknown key"),
    Invalid("soap-without-namespace", profile('soap: {version: "1.1"}\n'), "upstreams.billing.soap.namespace", "is required"),
    Invalid("soap-version", profile('soap: {namespace: "urn:x", version: "2.0"}\n'), "upstreams.billing.soap.version", "must be one of 1.1, 1.2, got '2.0'"),
    # hedge, failover, fallback
    Invalid("hedge-after-zero", profile("hedge: {after: 0ms}\n"), "upstreams.billing.hedge.after", "must be greater than zero"),
    Invalid("hedge-max-too-many", profile("hedge: {max: 6}\n"), "upstreams.billing.hedge.max", "must be an integer between 1 and 5, got 6"),
    Invalid("failover-not-a-list", profile("failover: https://b.example.com\n"), "upstreams.billing.failover", "must be a non-empty list of http(s) URLs"),
    Invalid("failover-empty", profile("failover: []\n"), "upstreams.billing.failover", "must be a non-empty list of http(s) URLs"),
    Invalid("failover-url-with-query", profile("failover: ['https://b.example.com/v2?x=1']\n"), "upstreams.billing.failover[0]", "must not have a query or fragment"),
    Invalid("fallback-without-status", profile("fallback: {body: sorry}\n"), "upstreams.billing.fallback.status", "is required"),
    Invalid("fallback-status-below-200", profile("fallback: {status: 101}\n"), "upstreams.billing.fallback.status", "must be an integer between 200 and 599, got 101"),
    Invalid("fallback-body-not-text", profile("fallback: {status: 200, body: {items: []}}\n"), "upstreams.billing.fallback.body", "must be a string"),
    Invalid("fallback-header-line-break", profile('fallback: {status: 200, headers: {X-A: "a\\r\\nB: c"}}\n'), "upstreams.billing.fallback.headers.X-A", "must not contain line breaks"),
    # aggregates
    Invalid("aggregates-a-list", profile(top="aggregates: [/d]\n"), "aggregates", "must be a mapping of GET paths to parts, got list"),
    Invalid("aggregate-path-relative", profile(top="aggregates:\n  dashboard: {a: 'billing:/a'}\n"), "aggregates.dashboard", "must be a path starting with '/'"),
    Invalid("aggregate-path-reserved", profile(top="aggregates:\n  /_ambassador/d: {a: 'billing:/a'}\n"), "aggregates./_ambassador/d", "/_ambassador/ is reserved"),
    Invalid("aggregate-capture-in-a-segment", profile(top="aggregates:\n  /d/x{id}: {a: 'billing:/a'}\n"), "aggregates./d/x{id}", "a {capture} must be a whole path segment"),
    Invalid("aggregate-without-parts", profile(top="aggregates:\n  /d: {}\n"), "aggregates./d", "must map part names to 'upstream:/path'"),
    Invalid("aggregate-part-without-upstream", profile(top="aggregates:\n  /d: {a: /users}\n"), "aggregates./d.a", "must be 'upstream:/path'"),
    Invalid("aggregate-part-path-relative", profile(top="aggregates:\n  /d: {a: 'billing:users'}\n"), "aggregates./d.a", "the path after 'billing:' must start with '/'"),
    Invalid("aggregate-part-stray-brace", profile(top="aggregates:\n  /d/{id}: {a: 'billing:/u/{id}/{user-id}'}\n"), "aggregates./d/{id}.a", "'{' and '}' may only enclose"),
    Invalid("aggregate-part-unclosed-placeholder", profile(top="aggregates:\n  /d: {a: 'billing:/u?page={query.page'}\n"), "aggregates./d.a", "'{' and '}' may only enclose"),
    Invalid("aggregate-part-named-errors", profile(top="aggregates:\n  /d: {_errors: 'billing:/a'}\n"), "aggregates./d._errors", "_errors is reserved"),
]

ENVIRONMENT = "what ${...} stands for is only known when the profile is loaded"
CROSS_REFERENCE = "JSON Schema cannot relate one entry to another"
LOADER_ONLY = [
    Invalid("variable-not-set", profile(f'auth: {{type: bearer, token: "${{{UNSET_VAR}}}"}}\n'), "upstreams.billing.auth.token", f"environment variable {UNSET_VAR} is not set", ENVIRONMENT),
    Invalid("variable-empty", profile(f'auth: {{type: bearer, token: "${{{EMPTY_VAR}}}"}}\n'), "upstreams.billing.auth.token", f"environment variable {EMPTY_VAR} is empty", ENVIRONMENT),
    Invalid("file-missing", profile('auth: {type: basic, username: svc, password: "${file:secrets/missing}"}\n'), "upstreams.billing.auth.password", "cannot read ", ENVIRONMENT),
    Invalid("bad-substitution", profile('auth: {type: bearer, token: "${1TOKEN}"}\n'), "upstreams.billing.auth.token", "bad substitution '${1TOKEN}'", ENVIRONMENT),
    Invalid("substituted-value-not-an-integer", profile(f'breaker: {{fail_max: "${{{SET_VAR}}}"}}\n'), "upstreams.billing.breaker.fail_max", f"must be an integer, got '{SET_VALUE}'", ENVIRONMENT),
    Invalid("tls-file-unusable", profile(f"tls: {{client_cert: {SECRET_FILE}}}\n"), "upstreams.billing.tls", "cannot use the certificates", "JSON Schema cannot look into files"),
    Invalid("tls-file-missing", profile("tls: {ca: certs/missing.pem}\n"), "upstreams.billing.tls.ca", "file not found: ", "JSON Schema cannot look at files"),
    Invalid("duplicate-path-prefix", two_upstreams("{path_prefix: /x}", "{path_prefix: /x/}"), "upstreams.b.match.path_prefix", "'/x' is already used by upstream 'a'", CROSS_REFERENCE),
    Invalid("duplicate-host", two_upstreams("{host: x.internal}", "{host: X.internal}"), "upstreams.b.match.host", "'x.internal' is already used by upstream 'a'", CROSS_REFERENCE),
    Invalid("redis-store-without-state", profile("cache: {store: redis}\n"), "upstreams.billing.cache.store", "redis needs the profile's top-level `state: redis://...`", CROSS_REFERENCE),
    Invalid("aggregate-unknown-upstream", profile(top="aggregates:\n  /d: {a: 'users:/a'}\n"), "aggregates./d.a", "names unknown upstream 'users'", CROSS_REFERENCE),
    Invalid("aggregate-unknown-capture", profile(top="aggregates:\n  /d/{id}: {a: 'billing:/u/{user}'}\n"), "aggregates./d/{id}.a", "uses {user} which the path does not capture", CROSS_REFERENCE),
    Invalid("aggregate-capture-twice", profile(top="aggregates:\n  /d/{id}/{id}: {a: 'billing:/u/{id}'}\n"), "aggregates./d/{id}/{id}", "a capture name is used twice", CROSS_REFERENCE),
    Invalid(
        "aggregates-matching-the-same-requests",
        profile(top="aggregates:\n  /d/{id}: {a: 'billing:/u/{id}'}\n  /d/{user}: {a: 'billing:/u/{user}'}\n"),
        "aggregates./d/{user}",
        "matches the same requests as /d/{id}",
        CROSS_REFERENCE,
    ),
    Invalid("failover-repeats-url", profile("failover: ['http://127.0.0.1:9/v2/']\n"), "upstreams.billing.failover[0]", "http://127.0.0.1:9/v2 is already tried before", CROSS_REFERENCE),
    Invalid("fallback-header-set-by-the-ambassador", profile("fallback: {status: 200, headers: {Content-Length: '5'}}\n"), "upstreams.billing.fallback.headers.Content-Length", "Content-Length is set by the ambassador itself", "the schema lists header names by pattern, not the ones the transport owns"),
    Invalid("duplicate-yaml-key", profile("timeout: 1s\ntimeout: 2s\n"), "upstreams.billing.timeout", "duplicate key (line 6; first at line 5)", "YAML parsers keep the last of duplicate keys before a schema sees the document"),
]
