"""redis-py against a Tessera proxy, as an application would use it.

Usage: redis_py.py PORT default|2 [PASSWORD] -- with `default`, redis-py's own defaults
(RESP3: every connection opens with `HELLO 3`, `HELLO 3 AUTH default <password>` with a
password); with `2`, `protocol=2`. Prints `redis-py ok` when every check passed.
"""

import sys

import redis


def main() -> None:
    port = int(sys.argv[1])
    password = sys.argv[3] if len(sys.argv) > 3 else None
    kwargs = {"host": "127.0.0.1", "port": port, "password": password, "socket_timeout": 10}
    if sys.argv[2] == "2":
        kwargs["protocol"] = 2
    r = redis.Redis(**kwargs)
    assert r.ping() is True
    hello = r.execute_command("HELLO")
    want_proto = 2 if sys.argv[2] == "2" else 3
    proto = hello.get(b"proto", hello.get("proto")) if isinstance(hello, dict) else None
    if isinstance(hello, list):
        proto = hello[hello.index(b"proto") + 1]
    assert proto == want_proto, hello

    prefix = f"py{want_proto}:"
    r.delete(*(prefix + k for k in ("s", "h", "set", "z", "n", "l")))
    assert r.set(prefix + "s", "hello") is True
    assert r.get(prefix + "s") == b"hello"
    assert r.get(prefix + "missing") is None
    assert r.hset(prefix + "h", mapping={"a": "1", "b": "2"}) == 2
    assert r.hgetall(prefix + "h") == {b"a": b"1", b"b": b"2"}
    assert r.sadd(prefix + "set", "x", "y") == 2
    assert r.smembers(prefix + "set") == {b"x", b"y"}
    assert r.zadd(prefix + "z", {"m": 2.5, "n": 1}) == 2
    score = r.zscore(prefix + "z", "m")
    assert isinstance(score, float) and score == 2.5, score
    assert r.zrange(prefix + "z", 0, -1, withscores=True) == [(b"n", 1.0), (b"m", 2.5)]
    assert r.mget(prefix + "s", prefix + "missing", "other:missing") == [b"hello", None, None]

    pipe = r.pipeline(transaction=False)
    pipe.incr(prefix + "n")
    pipe.incrbyfloat(prefix + "n", 0.5)
    pipe.rpush(prefix + "l", "a", "b")
    pipe.lrange(prefix + "l", 0, -1)
    pipe.get(prefix + "nothing")
    pipe.hgetall(prefix + "h")
    assert pipe.execute() == [1, 1.5, 2, [b"a", b"b"], None, {b"a": b"1", b"b": b"2"}]

    info = r.info()
    assert isinstance(info["redis_version"], str) and info["tessera_version"], info
    assert info["connected_clients"] >= 1, info
    keyspace = r.info("keyspace")
    assert keyspace["db0"]["keys"] >= 6, keyspace
    assert set(keyspace["db0"]) >= {"keys", "expires", "avg_ttl"}, keyspace
    me = r.client_info()
    assert me["lib-name"] == "redis-py" and me["lib-ver"] == redis.__version__, me
    assert str(me["resp"]) == str(want_proto), me
    listed = r.client_list()
    assert any(str(c["id"]) == str(me["id"]) for c in listed), (me, listed)
    commandstats = r.info("commandstats")
    assert any(k.startswith("cmdstat_") for k in commandstats), commandstats

    # Keyspace-wide commands, as GUI tools and Python services send them.
    many = {f"{prefix}k{i}" for i in range(200)}
    pipe = r.pipeline(transaction=False)
    for k in many:
        pipe.set(k, "v")
    pipe.execute()
    scanned = list(r.scan_iter(match=prefix + "k*", count=50))
    assert len(scanned) == len(many), (len(scanned), len(set(scanned)))
    assert {k.decode() for k in scanned} == many
    assert {k.decode() for k in r.keys(prefix + "k*")} == many
    assert r.dbsize() >= len(many)
    assert r.randomkey() is not None
    sha = r.script_load("return redis.call('GET', KEYS[1])")
    assert r.script_exists(sha) == [True], sha
    for k in sorted(many)[:30]:
        assert r.evalsha(sha, 1, k) == b"v", k
    assert "maxmemory" in r.config_get("maxmemory")
    assert r.delete(*many) == len(many)

    try:
        r.execute_command("SUBSCRIBE", "x")
    except redis.ResponseError as e:
        assert "not supported" in str(e), e
    else:
        raise AssertionError("SUBSCRIBE through the proxy did not fail")

    if password:
        bad = redis.Redis(**{**kwargs, "password": "wrong"})
        try:
            bad.ping()
        except redis.AuthenticationError:
            pass
        else:
            raise AssertionError("a wrong password was accepted")
    print("redis-py ok")


if __name__ == "__main__":
    main()
