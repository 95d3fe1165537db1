"""The profile loader: every validation error (file, key path, message), the converters,
substitutions, relative paths and defaults."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from addons.profile import (
    AsyncPolicy,
    BasicAuth,
    BearerAuth,
    BreakerPolicy,
    CachePolicy,
    HeaderAuth,
    Match,
    NeedsNetwork,
    OAuth2ClientCredentials,
    ProfileError,
    QueryAuth,
    RetryPolicy,
    SoapPolicy,
    TLSPolicy,
    Upstream,
    UpstreamURL,
    load_profile,
    normal_origin,
    parse_profile,
    resolve_profile_name,
)
from addons.profile.values import (
    InvalidValue,
    Substituted,
    boolean,
    duration,
    host_name,
    integer,
    method_list,
    origin,
    path_prefix,
    positive_duration,
    redis_url,
    size,
    status_list,
    text,
    upstream_url,
)
from profile_corpus import (
    CA_FILE,
    EMPTY_VAR,
    INVALID,
    LOADER_ONLY,
    SECRET_FILE,
    SECRET_VALUE,
    SET_VALUE,
    SET_VAR,
    UNSET_VAR,
    VALID,
    Invalid,
    prepare,
    profile,
)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    prepare(tmp_path, monkeypatch)
    return tmp_path


def write(folder: Path, text: str, name: str = "profile.yaml") -> Path:
    file = folder / name
    file.write_text(text)
    return file


def refused(file: Path) -> ProfileError:
    with pytest.raises(ProfileError) as e:
        load_profile(file)
    return e.value


def billing(folder: Path, upstream: str = "", top: str = "") -> Upstream:
    return load_profile(write(folder, profile(upstream, top))).upstreams["billing"]


# --- every validation error names the file, the key path and the problem ----------------


@pytest.mark.parametrize("case", INVALID + LOADER_ONLY, ids=lambda c: c.id)
def test_each_validation_error(case: Invalid, folder):
    file = write(folder, case.text)
    error = refused(file)
    assert error.file == str(file)
    [(path, message)] = error.problems
    assert path == case.path
    assert case.message in message
    line = f"{file}: {case.path}: " if case.path else f"{file}: "
    assert str(error) == line + message


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_profiles_load(case, folder):
    loaded = load_profile(write(folder, case.text))
    assert loaded.upstreams


def test_all_problems_of_a_file_are_reported_at_once(folder):
    file = write(folder, profile("timeout: 5x\nbreaker: {fail_max: 0, reset_timout: 3s}\n"))
    assert refused(file).problems == [
        ("upstreams.billing.timeout", "must be a duration like 250ms, 5s, 2m, 1h or a number of seconds, got '5x'"),
        ("upstreams.billing.breaker.reset_timout", "unknown key (did you mean 'reset_timeout'?)"),
        ("upstreams.billing.breaker.fail_max", "must be an integer >= 1, got 0"),
    ]


def test_a_missing_profile_file(tmp_path):
    error = refused(tmp_path / "nope.yaml")
    assert str(error) == f"{tmp_path / 'nope.yaml'}: cannot read the profile: No such file or directory"


def test_a_file_that_is_not_utf8(tmp_path):
    file = tmp_path / "latin1.yaml"
    file.write_bytes("upstreams: {caf\xe9: 1}\n".encode("latin-1"))
    assert "cannot read the profile: not UTF-8 text" in str(refused(file))


def test_yaml_syntax_errors_give_line_and_column(tmp_path):
    file = write(tmp_path, "upstreams:\n  billing: {url: x\n")
    [(path, message)] = refused(file).problems
    assert path == ""
    assert message.startswith("not valid YAML: line 3, column 1: ")


def test_more_than_one_yaml_document_is_refused(tmp_path):
    assert "not valid YAML" in str(refused(write(tmp_path, profile() + "---\n" + profile())))


def test_duplicate_keys_anywhere_are_refused_with_their_paths(tmp_path):
    text = profile("cache: {ttl: 1s, ttl: 2s}\n") + profile().replace("upstreams:\n", "")
    assert refused(write(tmp_path, text)).problems == [
        ("upstreams.billing.cache.ttl", "duplicate key (line 5; first at line 5)"),
        ("upstreams.billing", "duplicate key (line 6; first at line 2)"),
    ]


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    assert "not valid YAML" in str(refused(write(tmp_path, "upstreams: !!python/object:os.system {}\n")))


def test_parse_profile_takes_a_document_and_its_path(folder):
    loaded = parse_profile({"upstreams": {"a": {"url": "http://h", "match": {"host": "a.internal"}}}}, folder / "p.yaml")
    assert loaded.upstreams["a"].match == Match(host="a.internal")
    with pytest.raises(ProfileError) as e:
        parse_profile({"upstreams": {"a": {"url": "http://h"}}}, folder / "p.yaml")
    assert str(e.value) == f"{folder / 'p.yaml'}: upstreams.a.match: is required"


@pytest.mark.parametrize(
    "auth, secret",
    [
        ("{type: bearer, token: 987654321}", "987654321"),
        ('{type: bearer, token: "${file:secrets/multi}"}', "line2-secret"),
        ('{type: basic, username: "${AMBASSADOR_TEST_SECRET}", password: pw}', "hunter2"),
        ("{type: basic, username: svc, password: 55555}", "55555"),
        ('{type: header, name: X-Key, value: "${AMBASSADOR_TEST_SECRET}"}', "hunter2"),
    ],
)
def test_problems_never_show_a_credential(folder, monkeypatch, auth, secret):
    monkeypatch.setenv("AMBASSADOR_TEST_SECRET", "hunter2:\nx")
    (folder / "secrets" / "multi").write_text("line1\nline2-secret\n")
    error = refused(write(folder, profile(f"auth: {auth}\n")))
    assert error.problems and secret not in str(error)


# --- defaults --------------------------------------------------------------------------


def test_a_minimal_upstream_has_the_defaults_and_no_features(folder):
    loaded = load_profile(write(folder, profile()))
    assert loaded.path == folder / "profile.yaml"
    assert loaded.state is None and dict(loaded.aggregates) == {}
    up = loaded.upstreams["billing"]
    assert up.url == UpstreamURL("http", "127.0.0.1", 9, "/v2")
    assert up.match == Match(path_prefix="/billing")
    assert up.timeout == 30.0
    assert up.tls == TLSPolicy(verify=True)
    assert (up.auth, up.cache, up.breaker, up.retry, up.async_, up.soap) == (None,) * 6


@pytest.mark.parametrize("written", ["{}", ""])
def test_empty_or_bare_sections_switch_features_on_with_their_defaults(folder, written):
    up = billing(folder, "".join(f"{key}: {written}\n" for key in ("tls", "cache", "breaker", "retry", "async")))
    assert up.tls == TLSPolicy()
    assert up.cache == CachePolicy(ttl=0.0, stale_if_error=0.0, max_bytes=64 * 1024**2, store="memory")
    assert up.breaker == BreakerPolicy(5, 30.0, frozenset({500, 502, 503, 504}), 1)
    assert up.retry == RetryPolicy(3, 0.1, frozenset({502, 503, 504}), frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}))
    assert up.async_ == AsyncPolicy(keep=3600.0)


def test_optional_keys_of_auth_and_soap_have_defaults(folder):
    up = billing(folder, "auth: {type: oauth2_client_credentials, token_url: 'https://a.example/t/', client_id: i, client_secret: s}\nsoap: {namespace: 'urn:x'}\n")
    assert up.auth == OAuth2ClientCredentials("https://a.example/t/", "i", "s", scope=None, auth_style="basic")
    assert up.soap == SoapPolicy("urn:x", "1.1")


def test_every_section_is_read_into_its_policy(folder):
    loaded = load_profile(write(folder, next(c.text for c in VALID if c.id == "every-key")))
    up = loaded.upstreams["billing"]
    assert up.timeout == 10.0
    assert up.tls == TLSPolicy(False, folder / CA_FILE, folder / CA_FILE, folder / CA_FILE)
    assert up.auth == OAuth2ClientCredentials("https://auth.example.com/oauth/token", SET_VALUE, SECRET_VALUE, "read write", "body")
    assert up.cache == CachePolicy(60.0, 600.0, 64 * 1024**2, "redis")
    assert up.breaker == BreakerPolicy(5, 30.0, frozenset({500, 502, 503, 504}), 1)
    assert up.retry == RetryPolicy(3, 0.1, frozenset({502, 503, 504}), frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST"}))
    assert up.async_ == AsyncPolicy(3600.0)
    assert up.soap == SoapPolicy("http://legacy.example.com/ns", "1.2")
    assert loaded.state == "redis://127.0.0.1:6379/0"
    dashboard = loaded.aggregates["/dashboard/{user_id}"]
    assert {name: (p.upstream, p.path) for name, p in dashboard.parts.items()} == {
        "user": ("billing", "/users/{user_id}"),
        "orders": ("billing", "/orders?user={user_id}&page={query.page}&sort={query.sort-by}"),
    }


@pytest.mark.parametrize(
    "auth, policy",
    [
        ("{type: bearer, token: t}", BearerAuth("t")),
        ("{type: header, name: X-Api-Key, value: v}", HeaderAuth("X-Api-Key", "v")),
        ("{type: query, name: api_key, value: v}", QueryAuth("api_key", "v")),
        ("{type: basic, username: u, password: p}", BasicAuth("u", "p")),
    ],
)
def test_each_kind_of_auth(folder, auth, policy):
    assert billing(folder, f"auth: {auth}\n").auth == policy


def test_the_policies_are_immutable(folder):
    loaded = load_profile(write(folder, profile("cache: {}\n")))
    with pytest.raises(AttributeError):
        loaded.upstreams["billing"].cache.ttl = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        loaded.upstreams["other"] = loaded.upstreams["billing"]  # type: ignore[index]


# --- substitutions ---------------------------------------------------------------------


def test_environment_variables_and_defaults(folder, monkeypatch):
    monkeypatch.setenv("AMBASSADOR_TEST_HOST", "partner.example.com")
    text_ = profile(f'auth: {{type: header, name: "${{{UNSET_VAR}:-X-Key}}", value: "k-${{{SET_VAR}}}-${{{EMPTY_VAR}:-none}}"}}\n')
    up = load_profile(write(folder, text_.replace("127.0.0.1", "${AMBASSADOR_TEST_HOST}"))).upstreams["billing"]
    assert up.auth == HeaderAuth("X-Key", f"k-{SET_VALUE}-none")  # the default also stands for an empty variable
    assert up.url.host == "partner.example.com"


def test_an_empty_default_is_allowed(folder):
    assert billing(folder, f'soap: {{namespace: "urn:x${{{UNSET_VAR}:-}}"}}\n').soap.namespace == "urn:x"


def test_a_file_substitution_is_relative_to_the_profile_and_loses_its_trailing_newline(folder, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    (folder / "secrets" / "crlf").write_bytes(b"windows\r\n")
    up = billing(folder, f'auth: {{type: basic, username: "${{file:secrets/crlf}}", password: "${{file:{SECRET_FILE}}}"}}\n')
    assert up.auth == BasicAuth("windows", SECRET_VALUE)


def test_a_file_substitution_may_be_absolute(folder, tmp_path_factory):
    secret = tmp_path_factory.mktemp("abs") / "token"
    secret.write_text("abc\n\n")
    assert billing(folder, f'auth: {{type: bearer, token: "${{file:{secret}}}"}}\n').auth == BearerAuth("abc")


def test_substituted_text_is_not_substituted_again(folder, monkeypatch):
    monkeypatch.setenv("AMBASSADOR_TEST_TRICKY", "${" + SET_VAR + "}")
    assert billing(folder, 'auth: {type: bearer, token: "${AMBASSADOR_TEST_TRICKY}"}\n').auth == BearerAuth("${" + SET_VAR + "}")


def test_substitutions_give_typed_settings_their_values(folder, monkeypatch):
    monkeypatch.setenv("AMBASSADOR_TEST_N", "7")
    monkeypatch.setenv("AMBASSADOR_TEST_OFF", "False")
    up = billing(
        folder,
        'timeout: "${AMBASSADOR_TEST_N}s"\n'
        'tls: {verify: "${AMBASSADOR_TEST_OFF}"}\n'
        'breaker: {fail_max: "${AMBASSADOR_TEST_N}", failure_statuses: ["50${AMBASSADOR_TEST_N}"]}\n'
        'cache: {max_bytes: "${AMBASSADOR_TEST_N}KB"}\n',
    )
    assert up.timeout == 7.0
    assert up.tls.verify is False
    assert up.breaker.fail_max == 7 and up.breaker.failure_statuses == {507}
    assert up.cache.max_bytes == 7 * 1024


def test_substitutions_in_aggregate_parts(folder, monkeypatch):
    monkeypatch.setenv("AMBASSADOR_TEST_PATH", "/v3/users")
    loaded = load_profile(write(folder, profile(top="aggregates:\n  /d/{id}: {u: 'billing:${AMBASSADOR_TEST_PATH}/{id}'}\n")))
    assert loaded.aggregates["/d/{id}"].parts["u"].path == "/v3/users/{id}"


def test_a_missing_variable_in_a_list_or_a_part_is_reported_there(folder):
    error = refused(write(folder, profile(f'retry: {{methods: [GET, "${{{UNSET_VAR}}}"]}}\n', f"aggregates:\n  /d: {{u: 'billing:/${{{UNSET_VAR}}}'}}\n")))
    assert error.problems == [
        ("upstreams.billing.retry.methods", f"environment variable {UNSET_VAR} is not set"),
        ("aggregates./d.u", f"environment variable {UNSET_VAR} is not set"),
    ]


def test_an_unreadable_file_substitution(folder):
    [(path, message)] = refused(write(folder, profile('auth: {type: bearer, token: "${file:secrets}"}\n'))).problems
    assert (path, message) == ("upstreams.billing.auth.token", f"cannot read {folder / 'secrets'}: Is a directory")


# --- relative paths --------------------------------------------------------------------


def test_relative_paths_are_relative_to_the_profiles_folder(folder, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    (folder / "sub").mkdir()
    file = write(folder / "sub", profile(f"tls: {{ca: ../{CA_FILE}}}\ncache: {{store: 'sqlite:state/cache.db'}}\n"))
    up = load_profile(file).upstreams["billing"]
    assert up.tls.ca == folder / CA_FILE
    assert up.cache == CachePolicy(store="sqlite", sqlite_path=folder / "sub" / "state" / "cache.db")


def test_home_relative_paths(folder, monkeypatch):
    monkeypatch.setenv("HOME", str(folder))
    assert billing(folder, "tls: {client_cert: ~/" + CA_FILE + "}\n").tls.client_cert == folder / CA_FILE


def test_the_profile_path_is_absolute(folder, monkeypatch):
    write(folder, profile())
    monkeypatch.chdir(folder)
    assert load_profile("profile.yaml").path == folder / "profile.yaml"


def test_profile_names_and_paths(tmp_path):
    profiles = tmp_path / "profiles"
    assert resolve_profile_name("prod", profiles) == profiles / "prod.yaml"
    assert resolve_profile_name("prod.yaml", profiles) == Path("prod.yaml")
    assert resolve_profile_name("conf/prod", profiles) == Path("conf/prod")
    assert resolve_profile_name("/etc/a.yml", profiles) == Path("/etc/a.yml")


# --- converters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, seconds",
    [("250ms", 0.25), ("5s", 5), ("2m", 120), ("1h", 3600), ("1.5s", 1.5), ("10", 10), (3, 3.0), (0.5, 0.5), (0, 0.0), ("0s", 0.0)],
)
def test_durations(value, seconds):
    assert duration(value) == seconds


LIKE = "must be a duration like 250ms, 5s, 2m, 1h or a number of seconds, got "


@pytest.mark.parametrize(
    "value, message",
    [
        ("5x", LIKE + "'5x'"),
        ("5 s", LIKE + "'5 s'"),
        ("-1s", LIKE + "'-1s'"),
        ("1h30m", LIKE + "'1h30m'"),
        ("", LIKE + "''"),
        (True, LIKE + "bool True"),
        (None, LIKE + "nothing"),
        ([1], LIKE + "list [1]"),
        (-2, "must be a duration of zero or more, got int -2"),
        (math.inf, "must be a duration of zero or more, got float inf"),
        (math.nan, "must be a duration of zero or more, got float nan"),
    ],
)
def test_bad_durations(value, message):
    with pytest.raises(InvalidValue) as e:
        duration(value)
    assert str(e.value) == message


def test_positive_durations():
    assert positive_duration("1ms") == 0.001
    for zero in (0, "0ms", "0.0s"):
        with pytest.raises(InvalidValue, match="must be greater than zero"):
            positive_duration(zero)


@pytest.mark.parametrize(
    "value, n",
    [(512, 512), ("512", 512), ("512B", 512), ("512KB", 512 * 1024), ("64MB", 64 * 1024**2), ("1GB", 1024**3), ("64mb", 64 * 1024**2), ("2kB", 2048)],
)
def test_sizes(value, n):
    assert size(value) == n


@pytest.mark.parametrize("value", ["64XB", "1.5MB", "64 MB", "MB", "-1", 1.5, True, None, 0, "0KB"])
def test_bad_sizes(value):
    with pytest.raises(InvalidValue, match="must be a size like 512KB, 64MB or a number of bytes|must be greater than zero"):
        size(value)


def test_integers():
    at_least_one = integer(1)
    assert at_least_one(3) == 3
    assert at_least_one(3.0) == 3  # what JSON Schema calls an integer too
    assert at_least_one(Substituted("12")) == 12
    for bad, message in [("12", "must be an integer, got '12'"), (True, "got bool True"), (2.5, "got float 2.5"), (0, "must be an integer >= 1, got 0"), (Substituted("٣"), "must be an integer")]:
        with pytest.raises(InvalidValue, match=message):
            at_least_one(bad)
    with pytest.raises(InvalidValue, match="between 1 and 20, got 21"):
        integer(1, 20)(21)


def test_booleans():
    assert boolean(True) is True and boolean(False) is False
    assert boolean(Substituted("TRUE")) is True and boolean(Substituted("false")) is False
    for bad in ("true", "yes", 1, None, Substituted("yes")):
        with pytest.raises(InvalidValue, match="must be true or false"):
            boolean(bad)


def test_text():
    assert text("x") == "x"
    assert type(text(Substituted("x"))) is str
    for bad, message in [("", "must not be empty"), (12, r"got int \(quote it"), (1.10, r"got float \(quote it"), (True, "got bool$"), (None, "got nothing$")]:
        with pytest.raises(InvalidValue, match=message):
            text(bad)


def test_status_and_method_lists():
    assert status_list([500, Substituted("503"), 500]) == {500, 503}
    assert status_list([]) == frozenset()
    for bad in ([99], [600], ["500"], [True], "500"):
        with pytest.raises(InvalidValue):
            status_list(bad)
    assert method_list(["GET", "POST"]) == {"GET", "POST"}
    for bad in ([], ["get"], ["FETCH"], "GET", [1]):
        with pytest.raises(InvalidValue):
            method_list(bad)


@pytest.mark.parametrize(
    "raw, url",
    [
        ("http://Partner.Example.com", UpstreamURL("http", "partner.example.com", 80, "")),
        ("https://h/v2/", UpstreamURL("https", "h", 443, "/v2")),
        ("https://h:8443/a/b", UpstreamURL("https", "h", 8443, "/a/b")),
        ("http://[::1]:8080/x", UpstreamURL("http", "::1", 8080, "/x")),
    ],
)
def test_upstream_urls(raw, url):
    assert upstream_url(raw) == url


def test_upstream_url_origin_and_text():
    assert str(upstream_url("https://h:443/v2")) == "https://h/v2"
    assert upstream_url("http://[::1]:8080/x").origin == "http://[::1]:8080"


@pytest.mark.parametrize(
    "raw, message",
    [
        ("partner.example.com", "must be an http:// or https:// URL with a host"),
        ("http:///path", "with a host"),
        ("http://h:99999", "is not a valid URL"),
        ("http://h:0", "port must be 1-65535"),
        ("http://h/a?b", "must not have a query or fragment"),
        ("http://h/#f", "must not have a query or fragment"),
        ("http://h/a b", "must not contain spaces"),
        ("https://u:p@h", "must not carry credentials"),
    ],
)
def test_bad_upstream_urls(raw, message):
    with pytest.raises(InvalidValue, match=message):
        upstream_url(raw)


def test_path_prefixes_and_hosts():
    assert path_prefix("/billing/") == "/billing"
    assert path_prefix("/") == "/"
    for bad in ("billing", "/a?b", "/a%2f", "/a/./b", "/_ambassador", "/_ambassador/x/", "/a b"):
        with pytest.raises(InvalidValue):
            path_prefix(bad)
    assert path_prefix("/_ambassadors") == "/_ambassadors"
    assert host_name("Billing.Internal:8080") == "billing.internal:8080"
    for bad in ("-x", "x.", "a b", "x:y", "x:1:2", ""):
        with pytest.raises(InvalidValue):
            host_name(bad)


def test_redis_urls():
    for good in ("redis://127.0.0.1:6379/0", "rediss://:pw@h:6380", "unix:///run/redis.sock"):
        assert redis_url(good, Path(".")) == good
    for bad in ("http://h", "redis://", "127.0.0.1:6379"):
        with pytest.raises(InvalidValue, match="must be a redis://host:port/db URL"):
            redis_url(bad, Path("."))


def test_allowed_origins_and_hosts_are_normalised(folder):
    loaded = parse_profile(
        {
            "upstreams": {"billing": {"url": "http://127.0.0.1:9", "match": {"path_prefix": "/b"}}},
            "allowed_origins": ["HTTPS://App.Example.com:443", "http://localhost:80", "http://[::1]:3000", "https://x.example:8443"],
            "allowed_hosts": ["Ambassador.Internal"],
        },
        folder / "p.yaml",
    )
    assert loaded.allowed_origins == {"https://app.example.com", "http://localhost", "http://[::1]:3000", "https://x.example:8443"}
    assert loaded.allowed_hosts == {"ambassador.internal"}
    assert isinstance(loaded.allowed_origins, frozenset) and isinstance(loaded.allowed_hosts, frozenset)


def test_without_allowed_lists_nothing_is_allowed_beyond_the_ambassador_itself(folder):
    loaded = parse_profile({"upstreams": {"b": {"url": "http://127.0.0.1:9", "match": {"path_prefix": "/b"}}}}, folder / "p.yaml")
    assert loaded.allowed_origins == frozenset() and loaded.allowed_hosts == frozenset()


@pytest.mark.parametrize("raw", [
    "null", "", "https://", "https://a.example/", "https://a.example/x", "https://a.example?x", "https://a.example#",
    "https://u@a.example", "ftp://a.example", "https://a.example:0", "https://a.example:99999", "https://a b", "https://a\x00b",
])
def test_what_is_not_an_origin(raw):
    assert normal_origin(raw) is None
    with pytest.raises(InvalidValue):
        origin(raw)


# --- soap: wsdl and action ----------------------------------------------------------------

WSDL = """<?xml version="1.0"?>
<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
  xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:tns="urn:x" targetNamespace="urn:x">
  <types><xs:schema targetNamespace="urn:x" elementFormDefault="qualified">
    <xs:element name="Ping"><xs:complexType><xs:sequence><xs:element name="n" type="xs:int"/></xs:sequence></xs:complexType></xs:element>
    <xs:element name="PingResponse"><xs:complexType><xs:sequence><xs:element name="n" type="xs:int"/></xs:sequence></xs:complexType></xs:element>
  </xs:schema></types>
  <message name="PingIn"><part name="p" element="tns:Ping"/></message>
  <message name="PingOut"><part name="p" element="tns:PingResponse"/></message>
  <portType name="P"><operation name="Ping"><input message="tns:PingIn"/><output message="tns:PingOut"/></operation></portType>
  <binding name="B" type="tns:P"><soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="Ping"><soap:operation soapAction="urn:x:ping"/>
      <input><soap:body use="literal"/></input><output><soap:body use="literal"/></output></operation></binding>
  <service name="S"><port name="SP" binding="tns:B"><soap:address location="http://127.0.0.1:9/"/></port></service>
</definitions>
"""


def test_soap_wsdl_is_read_from_the_profile_folder_when_the_profile_loads(folder):
    (folder / "legacy").mkdir()
    (folder / "legacy" / "ping.wsdl").write_text(WSDL)
    soap = billing(folder, "soap: {namespace: 'urn:x', wsdl: legacy/ping.wsdl}\n").soap
    assert soap.wsdl == str((folder / "legacy" / "ping.wsdl").resolve())
    assert soap.schema.operations["Ping"].action == "urn:x:ping"
    assert soap.action == "{namespace}/{operation}"


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read the WSDL"),
    ("<definitions>not closed", "cannot read the WSDL"),
    (WSDL.replace("<!DOCTYPE", "").replace('<?xml version="1.0"?>', '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e "x">]>'), "cannot read the WSDL"),
])
def test_a_broken_wsdl_is_a_problem_at_its_key(folder, content, problem):
    if content is not None:
        (folder / "ping.wsdl").write_text(content)
    error = refused(write(folder, profile("soap: {namespace: 'urn:x', wsdl: ping.wsdl}\n")))
    assert [path for path, _ in error.problems] == ["upstreams.billing.soap.wsdl"]
    assert problem in error.problems[0][1]


def test_without_fetching_a_wsdl_url_is_named_not_fetched(folder):
    """Where waiting on the network would block (a running ambassador), the loader says what
    there is to fetch instead; a local WSDL file is still read."""
    (folder / "ping.wsdl").write_text(WSDL)
    text = profile("soap: {namespace: 'urn:x', wsdl: 'http://127.0.0.1:9/ping?wsdl'}\n")
    with pytest.raises(NeedsNetwork) as needs:
        load_profile(write(folder, text), fetch=False)
    assert needs.value.urls == ["http://127.0.0.1:9/ping?wsdl"]
    local = load_profile(write(folder, profile("soap: {namespace: 'urn:x', wsdl: ping.wsdl}\n")), fetch=False)
    assert local.upstreams["billing"].soap.schema.operations["Ping"].action == "urn:x:ping"


def test_without_fetching_the_other_problems_are_reported_first(folder):
    text = profile("timeout: soon\nsoap: {namespace: 'urn:x', wsdl: 'http://127.0.0.1:9/ping?wsdl'}\n")
    with pytest.raises(ProfileError) as error:
        load_profile(write(folder, text), fetch=False)
    assert [path for path, _ in error.value.problems] == ["upstreams.billing.timeout"]


def test_a_wsdl_without_a_binding_for_the_version_is_a_problem(folder):
    (folder / "ping.wsdl").write_text(WSDL)
    error = refused(write(folder, profile("soap: {namespace: 'urn:x', version: '1.2', wsdl: ping.wsdl}\n")))
    assert error.problems == [("upstreams.billing.soap.wsdl", f"the WSDL {(folder / 'ping.wsdl').resolve()} has no SOAP 1.2 binding (check soap.version)")]


@pytest.mark.parametrize("action, problem", [
    ("{namespace}#{op}", "may use {namespace} and {operation}, not {op}"),
    ('say "{operation}"', "must not contain quotes"),
    ("ftp://x", None),
])
def test_soap_action_template(folder, action, problem):
    text = f"soap: {{namespace: 'urn:x', action: '{action}'}}\n"
    if problem is None:
        assert billing(folder, text).soap.action == action
    else:
        error = refused(write(folder, profile(text)))
        assert error.problems[0][0] == "upstreams.billing.soap.action" and problem in error.problems[0][1]


def test_soap_wsdl_of_another_scheme_is_refused(folder):
    error = refused(write(folder, profile("soap: {namespace: 'urn:x', wsdl: 'ftp://x/y.wsdl'}\n")))
    assert error.problems == [("upstreams.billing.soap.wsdl", "must be a file or an http(s) URL, got 'ftp://x/y.wsdl'")]
