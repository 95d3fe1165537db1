"""The profile's `state` URL, the keys' hash tags, and the cache's Redis store scripts run
directly against a real three-node Redis Cluster."""

import asyncio
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis.asyncio
import redis.cluster
from redis.crc import key_slot

from addons import shared_redis
from addons.cache.redis_store import RedisStore
from addons.profile import BreakerPolicy
from addons.shared_state import SharedBreakerState
from redis_server import RedisCluster


def test_state_urls_that_are_accepted(tmp_path):
    for good in ("redis://127.0.0.1:6379/0", "rediss://:pw@h:6380", "unix:///run/redis.sock",
                 "redis+cluster://10.0.0.5:7000", "redis+cluster://h:7000/0", "rediss://h:6380/1?ssl_cert_reqs=required"):
        assert shared_redis.state_url(good, tmp_path) == good


def test_certificate_files_are_relative_to_the_profile(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("-")
    url = shared_redis.state_url("rediss://h:6380/0?ssl_ca_certs=certs/ca.pem&ssl_check_hostname=false", tmp_path)
    assert url.startswith("rediss://h:6380/0?")
    assert parse_qsl(urlsplit(url).query) == [("ssl_ca_certs", str(tmp_path / "certs" / "ca.pem")), ("ssl_check_hostname", "false")]
    with pytest.raises(ValueError, match="ssl_ca_certs: no such file"):
        shared_redis.state_url("rediss://h:6380/0?ssl_ca_certs=missing.pem", tmp_path)


@pytest.mark.parametrize("url, message", [
    ("http://:s3cret@h:6379", "must be a redis://host:port/db URL"),
    ("redis+cluster://:s3cret@h:7000/2", "has only database 0"),
    ("redis+cluster://:s3cret@h", "needs host:port"),
    ("redis://:s3cret@h:port", "invalid port"),
    ("redis://:s3cret@h:6379/0?password=x", "unknown option password"),
])
def test_refused_state_urls_never_show_the_password(tmp_path, url, message):
    with pytest.raises(ValueError, match=message) as refused:
        shared_redis.state_url(url, tmp_path)
    assert "s3cret" not in str(refused.value)


def test_redacted():
    assert shared_redis.redacted("rediss://app:s3cret@h:6380/0") == "rediss://app:***@h:6380/0"
    assert shared_redis.redacted("redis://:s3cret@h") == "redis://:***@h"
    assert shared_redis.redacted("redis://h:6379/0") == "redis://h:6379/0"


def test_every_key_of_one_upstream_is_in_one_cluster_slot():
    for name in ("billing", "a", "partner-api", "x_1"):
        breaker = SharedBreakerState(redis.asyncio.Redis(), name, BreakerPolicy(), 1.0)
        store = RedisStore("redis://127.0.0.1:1", name, f"{name} https://api.example/v2", 1 << 20)
        slots = {key_slot(key.encode()) for key in [breaker.key, *store.keys]}
        assert slots == {key_slot(name.encode())}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with RedisCluster(tmp_path_factory.mktemp("cluster")) as server:
        yield server


def test_the_redis_store_evicts_and_keeps_its_account_on_a_cluster(cluster):
    """Eviction deletes only what its script was given: on a cluster, where a script may not
    reach keys it was not given, the least recently used go and the account stays exact."""
    async def scenario():
        store = RedisStore(cluster.url, "evicting", "evicting http://origin", 10_000)
        await store.clear("evicting http://origin")
        blob = b"x" * 3000
        for i in range(5):
            await store.scripts["put"](keys=store.keys, args=[f"k{i}", blob, 60_000, store.max_bytes])
            if i:
                assert await store.scripts["get"](keys=store.keys, args=["k0"]) == blob  # k0 stays the most recent
        count = await store.scripts["count"](keys=store.keys, args=[])
        await store.close()
        return count

    assert asyncio.run(scenario()) == 3
    client = redis.cluster.RedisCluster.from_url(cluster.url.replace("redis+cluster", "redis"))
    blobs, used, expires, account = (f"ambassador:{{evicting}}:cache:evicting http://origin:{p}" for p in ("blobs", "used", "expires", "bytes"))
    assert sorted(client.hkeys(blobs)) == [b"k0", b"k3", b"k4"]
    assert int(client.get(account)) == 9000 == sum(client.hstrlen(blobs, k) for k in client.hkeys(blobs))
    assert set(client.zrange(used, 0, -1)) == set(client.zrange(expires, 0, -1)) == {b"k0", b"k3", b"k4"}
    client.close()
