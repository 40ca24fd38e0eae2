"""A multi-node Ray on this machine, for tests: a head and worker nodes, each a raylet of its own with its own
resources and environment (`ray.cluster_utils.Cluster`). It runs in a process of its own, because building
and shutting down a `Cluster` changes the Ray state of the process that does it (the test session's own Ray).

    python tests/multinode.py '{"temp_dir": ..., "head": {...}, "nodes": [{...}, ...]}'

Each `{...}` is `Cluster.add_node`'s keyword arguments. It prints `address <gcs address>` once every node is
up, then keeps the cluster until its stdin closes."""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every port on loopback

from ray.cluster_utils import Cluster  # noqa: E402


def main() -> None:
    spec = json.loads(sys.argv[1])
    cluster = Cluster(initialize_head=True, head_node_args={
        "node_ip_address": "127.0.0.1", "include_dashboard": False, "temp_dir": spec["temp_dir"], **spec["head"]})
    try:
        for node in spec["nodes"]:
            cluster.add_node(node_ip_address="127.0.0.1", **node)
        cluster.wait_for_nodes()
        print(f"address {cluster.address}", flush=True)
        sys.stdin.read()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
