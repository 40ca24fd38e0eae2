"""A cluster launcher config tried on one machine: Ray's fake multi-node provider starts a raylet per node the
autoscaler launches, so a config's node types, custom resources and min/max workers meet a stage's real demand
before any instance is paid for.

    python -m ray_distill.distributed.fake_cluster cluster/aws.yaml

prints the head's addresses, then keeps the cluster up until Ctrl-C. Only the v1 autoscaler can run it with the
installed Ray (its v2 reader and `AutoscalingCluster` open a `fake_multi_node/example.yaml` the wheel lacks), so
the config is written here in full rather than filled in by Ray's defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

# The provider tags its head with this type; a head under another name is "missing" to the autoscaler and its
# resources are never counted.
HEAD_TYPE = "ray.head.default"

# The launcher keys the v1 autoscaler reads without defaults; fake nodes run no commands and mount nothing.
_EMPTY_KEYS: dict[str, Any] = {
    "auth": {}, "docker": {}, "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
    "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
    "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": []}


def fake_config(launcher: dict[str, Any], gcs_address: str, *, cpus: float = 2, gpus: float = 1,
                object_store_memory: int = 200_000_000, idle_timeout_minutes: float = 0.25) -> dict[str, Any]:
    """The fake-provider twin of a `ray up` config: the same node types with their custom resources and
    min/max workers, CPUs and GPUs capped at `cpus` and `gpus` per node so that the nodes fit one machine, the
    head renamed to the provider's `ray.head.default`, and a short idle timeout."""
    types = launcher.get("available_node_types")
    head = launcher.get("head_node_type")
    if not types or head not in types:
        raise ValueError("the launcher config needs available_node_types and a head_node_type among them")
    nodes: dict[str, Any] = {}
    for name, spec in types.items():
        resources = dict(spec.get("resources") or {})
        if name == head:
            nodes[HEAD_TYPE] = {"resources": resources, "node_config": {}, "max_workers": 0}
            continue
        for key, cap in (("CPU", cpus), ("GPU", gpus)):
            if key in resources:
                resources[key] = min(resources[key], cap)
        resources["object_store_memory"] = object_store_memory  # else 30 % of the machine's memory per node
        nodes[name] = {"resources": resources, "node_config": {}, "min_workers": spec.get("min_workers", 0),
                       "max_workers": spec.get("max_workers", 0)}
    return {
        "cluster_name": f"{launcher.get('cluster_name', 'cluster')}-fake",
        "max_workers": launcher.get("max_workers", sum(n.get("max_workers", 0) for n in nodes.values())),
        "upscaling_speed": launcher.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "launch_multiple": True, "gcs_address": gcs_address},
        "available_node_types": nodes,
        "head_node_type": HEAD_TYPE,
        **copy.deepcopy(_EMPTY_KEYS),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_under(temp_dir: str) -> list[int]:
    """Pids whose command line names `temp_dir`: a head's processes and its fake nodes' raylets and agents,
    which inherit the head's temp dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if temp_dir in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return found


@dataclass
class FakeCluster:
    """A running fake cluster: `gcs` is what `ray.init(address=...)` joins, `dashboard` what `ray job submit
    --address` and the state API take, `env` the environment for a client process."""

    gcs: str
    dashboard: str
    env: dict[str, str]
    temp_dir: str
    head: subprocess.Popen

    def status(self) -> dict[str, Any]:
        """The autoscaler's own report (`ray status` formats the same): `active_nodes`, `pending_launches`
        and `idle_nodes` by node type, `failed_nodes`, and the pending resource demand."""
        from ray._raylet import GcsClient

        raw = GcsClient(address=self.gcs).internal_kv_get(b"__autoscaling_status", None)
        return json.loads(raw) if raw else {}


def _wait_for_dashboard(url: str, head: subprocess.Popen, output: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"the fake cluster's head exited:\n{output.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"no dashboard at {url} after {timeout:.0f} s")


@contextlib.contextmanager
def fake_cluster(launcher_path: str | Path, *, update_interval_s: int = 1, startup_timeout: float = 120,
                 **sizes: Any) -> Iterator[FakeCluster]:
    """Start a fake cluster from the `ray up` config at `launcher_path` (sizes as `fake_config`) and stop it on
    exit, with every process it started. Its Ray is separate from any other on the machine: stopping it never
    runs `ray stop`, which would stop those too."""
    launcher = yaml.safe_load(Path(launcher_path).read_text())
    gcs = f"127.0.0.1:{_free_port()}"
    config = fake_config(launcher, gcs, **sizes)
    validate(config)
    # Short: Ray's socket paths under it must fit 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rdfake-", dir="/tmp")
    config_path = Path(temp_dir) / "autoscaler.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "1"})
    head_env = dict(env, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S=str(update_interval_s),
                    RAY_enable_autoscaler_v2="0")
    dashboard = f"http://127.0.0.1:{_free_port()}"
    head = dict(config["available_node_types"][HEAD_TYPE]["resources"])
    head_cpus, head_gpus = head.pop("CPU", 0), head.pop("GPU", 0)
    output = Path(temp_dir) / "head.out"
    command = [str(bin_dir / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               f"--port={gcs.rsplit(':', 1)[1]}", f"--num-cpus={head_cpus:g}", f"--num-gpus={head_gpus:g}",
               f"--resources={json.dumps(head)}", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={dashboard.rsplit(':', 1)[1]}", f"--dashboard-agent-listen-port={_free_port()}",
               f"--temp-dir={temp_dir}", f"--autoscaling-config={config_path}", "--disable-usage-stats"]
    with output.open("w") as out:
        process = subprocess.Popen(command, env=head_env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        _wait_for_dashboard(dashboard, process, output, startup_timeout)
        yield FakeCluster(gcs=gcs, dashboard=dashboard, env=env, temp_dir=temp_dir, head=process)
    finally:
        stop(process, temp_dir)


def validate(config: dict[str, Any]) -> None:
    """Ray's own schema check of a launcher config (without its defaults, which the fake provider lacks)."""
    from ray.autoscaler._private.util import validate_config

    validate_config(config)


def stop(head: subprocess.Popen, temp_dir: str, grace: float = 10) -> None:
    """Stop the head, then the fake nodes it launched: they run without a reaper and outlive it."""
    head.terminate()
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_under(temp_dir)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = processes_under(temp_dir)
            time.sleep(0.2)
        if not pids:
            break
    shutil.rmtree(temp_dir, ignore_errors=True)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ray_distill.distributed.fake_cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a `ray up` cluster config, e.g. cluster/aws.yaml")
    parser.add_argument("--cpus", type=float, default=2, help="CPUs per worker node at most (default 2)")
    parser.add_argument("--gpus", type=float, default=1, help="logical GPUs per worker node at most (default 1)")
    parser.add_argument("--idle-timeout-minutes", type=float, default=0.25)
    args = parser.parse_args(argv)
    with fake_cluster(args.config, cpus=args.cpus, gpus=args.gpus,
                      idle_timeout_minutes=args.idle_timeout_minutes) as cluster:
        print(f"fake cluster up: ray job submit --address {cluster.dashboard} ...; "
              f"RAY_ADDRESS={cluster.gcs} for a driver; Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while cluster.head.poll() is None:
                time.sleep(1)


if __name__ == "__main__":
    main()
