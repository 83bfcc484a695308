import redis


def test_redis_server_answers_and_survives_restart(own_redis):
    client = redis.Redis.from_url(own_redis.url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    own_redis.stop()
    own_redis.start()
    assert client.get("k") is None  # no persistence: a restart is a real outage
