import redis


def test_redis_server_answers_and_survives_restart(own_redis):
    client = redis.Redis.from_url(own_redis.url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    own_redis.stop()
    own_redis.start()
    assert client.get("k") is None  # no persistence: a restart is a real outage


def test_cluster_has_three_primaries_sharing_the_slots(redis_cluster_uri, redis_cluster_nodes):
    from redis.cluster import ClusterNode, RedisCluster

    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", redis_cluster_nodes.ports[0])])
    try:
        primaries = client.get_primaries()
        assert sorted(node.port for node in primaries) == sorted(redis_cluster_nodes.ports)
        assert all(port + 10000 <= 65535 for port in redis_cluster_nodes.ports)
        for n in range(30):
            client.set(f"k{n}", n)
        # keys spread: every primary holds some of them
        assert all(client.dbsize(target_nodes=node) > 0 for node in primaries)
    finally:
        client.close()


def test_sentinel_names_the_primary(redis_sentinel_pair):
    from redis.sentinel import Sentinel

    sentinel = Sentinel([("127.0.0.1", redis_sentinel_pair.sentinel_port)], socket_timeout=2)
    primary = sentinel.master_for(redis_sentinel_pair.SERVICE, socket_timeout=2)
    primary.set("k", "v")
    assert primary.connection_pool.get_master_address()[1] == redis_sentinel_pair.primary.port
    direct = redis.Redis.from_url(redis_sentinel_pair.primary.url)
    assert direct.get("k") == b"v"
    direct.close()
