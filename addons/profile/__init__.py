"""The profile: YAML parsed and validated once into immutable, typed policy objects.

Every problem is reported with the file, the key path and what is wrong, and all problems of a
file are collected before giving up, so that one `check` run shows everything to fix.

- model.py: the policy objects, the keys each section allows, the value patterns;
- values.py: converters of single values (durations, sizes, URLs, header names...);
- reading.py: the walk over the YAML tree with `${...}` substitution and key paths;
- sections.py: one reader per upstream section;
- loader.py: the whole profile, the file, profile names.
"""

from .loader import (
    parse_profile, load_profile, read_yaml, resolve_profile_name,
)
from .model import (
    NAME_PATTERN, DURATION_PATTERN, SIZE_PATTERN, SUBSTITUTION_PATTERN, NAME_RE, DURATION_RE,
    SIZE_RE, SUBSTITUTION_RE, VARIABLE_RE, PLACEHOLDER_RE, QUERY_PLACEHOLDER,
    PART_PLACEHOLDER_RE, HEADER_NAME_RE, SIZE_UNITS, DURATION_UNITS, HTTP_METHODS, ADMIN_PREFIX,
    PROFILES_DIR, AGGREGATE_ERRORS_KEY, Keys, keys_of, SECTIONS, AUTH_TYPES, DEFAULTED_SECTIONS,
    NeedsNetwork, ProfileError, UpstreamURL, origin_text, normal_origin, Match, TLSPolicy, EgressProxy,
    BearerAuth, HeaderAuth, QueryAuth, BasicAuth, OAuth2ClientCredentials, AuthPolicy,
    CachePolicy, BreakerPolicy, RetryPolicy, LimitPolicy, AsyncPolicy, SoapPolicy, HedgePolicy,
    FallbackAnswer, Upstream, AggregatePart, Aggregate, Profile,
)
from .values import (
    InvalidValue, duration, positive_duration, size, upstream_url, egress_proxy, per_window,
    percentage,
)

__all__ = [
    "NAME_PATTERN", "DURATION_PATTERN", "SIZE_PATTERN", "SUBSTITUTION_PATTERN", "NAME_RE",
    "DURATION_RE", "SIZE_RE", "SUBSTITUTION_RE", "VARIABLE_RE", "PLACEHOLDER_RE",
    "QUERY_PLACEHOLDER", "PART_PLACEHOLDER_RE", "HEADER_NAME_RE", "SIZE_UNITS",
    "DURATION_UNITS", "HTTP_METHODS", "ADMIN_PREFIX", "PROFILES_DIR", "AGGREGATE_ERRORS_KEY",
    "Keys", "keys_of", "SECTIONS", "AUTH_TYPES", "DEFAULTED_SECTIONS", "ProfileError",
    "UpstreamURL", "origin_text", "normal_origin", "Match", "TLSPolicy", "EgressProxy",
    "BearerAuth", "HeaderAuth", "QueryAuth", "BasicAuth", "OAuth2ClientCredentials",
    "AuthPolicy", "CachePolicy", "BreakerPolicy", "RetryPolicy", "LimitPolicy", "AsyncPolicy",
    "SoapPolicy", "HedgePolicy", "FallbackAnswer", "Upstream", "AggregatePart", "Aggregate",
    "Profile", "InvalidValue", "duration", "positive_duration", "size", "upstream_url",
    "egress_proxy", "per_window", "percentage", "parse_profile", "load_profile", "read_yaml",
    "resolve_profile_name",
]
