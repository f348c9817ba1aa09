"""`REDIS_MODE=cluster make dev`: the stack starts its own 3-node Redis Cluster when nothing answers."""

from __future__ import annotations

from pathlib import Path

import redis

from local_stack import processes
from local_stack.dev import local_cluster


def test_cluster_mode_starts_a_local_cluster_and_points_redis_url_at_it(tmp_path: Path) -> None:
    """Nothing on a loopback REDIS_URL and REDIS_MODE=cluster: three primaries, and REDIS_URL names one."""
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{processes.free_port()}/0",
        "REDIS_MODE": "cluster",
        "LOCAL_STATE_DIR": str(tmp_path),
    }
    cluster = local_cluster(env)
    assert cluster is not None
    try:
        assert env["REDIS_URL"] == cluster.url
        with redis.RedisCluster.from_url(env["REDIS_URL"], decode_responses=True) as client:
            assert len(client.get_primaries()) == 3
            client.set("{a}:k", "v")
            assert client.get("{a}:k") == "v"
    finally:
        cluster.stop()


def test_other_modes_and_a_running_redis_start_nothing(tmp_path: Path, redis_url: str) -> None:
    """Without REDIS_MODE=cluster, or with something already answering, the plan decides as before."""
    free = f"redis://127.0.0.1:{processes.free_port()}/0"
    for env in (
        {"REDIS_URL": free, "REDIS_MODE": "auto"},
        {"REDIS_URL": free},
        {"REDIS_URL": redis_url, "REDIS_MODE": "cluster"},
    ):
        unchanged = dict(env)
        assert local_cluster({**env, "LOCAL_STATE_DIR": str(tmp_path)}) is None, env
        assert env == unchanged
