"""cluster/: the launcher configs pass Ray's own validation, the KubeRay manifests have what the operator
needs, and every role of the experiment configs fits a node type of every cluster."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from ray_distill.config import load_config
from ray_distill.distributed.resources import RETRIEVAL, peak, pick, roles

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHERS = ["aws.yaml", "gcp.yaml"]
# The configs meant for a GPU cluster (the quickstart runs anywhere and asks for nothing special).
CLUSTER_EXPERIMENTS = ["paper/distill.yaml", "paper/sweep.yaml", "wiki18_e5.yaml"]
WIKI18_SHARDS = 8  # 21M passages at experiments/wiki18_e5.yaml's passages_per_shard


def _load(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


def _launcher_nodes(config: dict) -> dict[str, tuple[dict[str, float], int]]:
    """node type -> (resources, most nodes of it)."""
    head = config["head_node_type"]
    return {name: (dict(t["resources"]), 1 if name == head else t["max_workers"])
            for name, t in config["available_node_types"].items()}


def _quantity(text) -> float:
    return float(str(text))


def _pod_resources(group: dict) -> dict[str, float]:
    """What Ray sees on a KubeRay pod: rayStartParams first, else the container's limits."""
    params = group["rayStartParams"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    found = {"CPU": _quantity(params.get("num-cpus", limits["cpu"])),
             "GPU": _quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))}
    if "resources" in params:  # KubeRay passes it to `ray start --resources` as given: a quoted JSON object
        found.update(json.loads(json.loads(params["resources"])))
    return found


def _kuberay_nodes(cluster: dict) -> dict[str, tuple[dict[str, float], int]]:
    spec = cluster["spec"]
    nodes = {"head": (_pod_resources(spec["headGroupSpec"]), 1)}
    for group in spec["workerGroupSpecs"]:
        nodes[group["groupName"]] = (_pod_resources(group), group["maxReplicas"])
    return nodes


CLUSTERS = {
    "aws": lambda: _launcher_nodes(_load("aws.yaml")),
    "gcp": lambda: _launcher_nodes(_load("gcp.yaml")),
    "kuberay": lambda: _kuberay_nodes(_load("kuberay/raycluster.yaml")),
}


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_configs_pass_rays_validation(name):
    from jsonschema import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load(name)
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` checks before it starts anything
    broken = copy.deepcopy(config)
    broken["available_node_types"]["head"]["resourcez"] = broken["available_node_types"]["head"].pop("resources")
    with pytest.raises(ValidationError):
        validate_config(prepare_config(broken))


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_launcher_node_installs_the_project_and_mounts_the_shared_storage(name):
    config = _load(name)
    assert config["file_mounts"] == {"~/ray-distill": "."}
    assert ".venv" in config["rsync_exclude"] and "runs" in config["rsync_exclude"]
    setups = {"head": config["head_setup_commands"]}
    setups |= {n: t["worker_setup_commands"] for n, t in config["available_node_types"].items()
               if n != config["head_node_type"]}
    for node, commands in setups.items():
        text = "\n".join(commands)
        assert "bash ~/ray-distill/scripts/install.sh ~/venv" in text, node
        assert "mountpoint -q /data ||" in text, node  # runs and the HF cache are shared by every node
        gpus = dict(config["available_node_types"].get(node, {"resources": {}})["resources"]).get("GPU", 0)
        # By name, not by nvidia-smi: a GPU node's driver may still be loading when its setup runs.
        assert f"RAY_DISTILL_INSTALL={'gpu' if gpus else 'base'} bash" in text, node
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert "source ~/venv/bin/activate" in commands[-1]  # `ray-distill` on the jobs' PATH
    # One image for every node (one Python), and not Ray's `latest_dlami` (Ubuntu 18.04, too old).
    images = {t["node_config"].get("ImageId") or t["node_config"]["disks"][0]["initializeParams"]["sourceImage"]
              for t in config["available_node_types"].values()}
    assert len(images) == 1 and "latest_dlami" not in images
    for node_type in config["available_node_types"].values():
        if "guestAccelerators" in node_type["node_config"]:  # GCP: GPUs cannot live-migrate
            assert node_type["node_config"]["scheduling"] == {"onHostMaintenance": "TERMINATE"}


def test_every_placeholder_to_replace_is_named_in_the_cluster_readme():
    readme = (CLUSTER / "README.md").read_text()
    texts = [(CLUSTER / name).read_text() for name in ("aws.yaml", "gcp.yaml", "kuberay/raycluster.yaml")]
    placeholders = {p for text in texts for p in re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b|\bREGISTRY\b", text)
                    if p not in ("HF_HOME", "RAY_HEAD_IP", "RAY_DISTILL_INSTALL")}
    assert {"EFS_DNS_NAME", "DLAMI_UBUNTU_22_04_AMI_ID", "FILESTORE_IP", "YOUR_PROJECT_ID", "REGISTRY"} <= placeholders
    for placeholder in placeholders:
        assert f"`{placeholder}`" in readme, f"{placeholder} is not explained in cluster/README.md"


def test_kuberay_manifests_have_what_the_operator_needs():
    import ray

    storage, cluster, job = _load("kuberay/storage.yaml"), _load("kuberay/raycluster.yaml"), _load("kuberay/rayjob.yaml")
    assert (cluster["apiVersion"], cluster["kind"], job["apiVersion"], job["kind"]) == \
           ("ray.io/v1", "RayCluster", "ray.io/v1", "RayJob")
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["enableInTreeAutoscaling"] is True
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] and isinstance(group["rayStartParams"], dict)
        assert container["resources"]["limits"] == container["resources"]["requests"]  # Ray sees what it gets
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        assert claims == {storage["metadata"]["name"]}
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
        assert {"name": "HF_HOME", "value": "/data/hf-cache"} in container["env"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert storage["spec"]["accessModes"] == ["ReadWriteMany"]
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    # A job on an existing cluster neither shuts it down nor expires with it.
    assert not {"shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "rayClusterSpec"} & set(job["spec"])
    assert re.fullmatch(r"ray-distill run /home/ray/ray-distill/experiments/\S+\.yaml", job["spec"]["entrypoint"])
    assert (REPO / job["spec"]["entrypoint"].split()[2].removeprefix("/home/ray/ray-distill/")).is_file()
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"] == _load("runtime_env.yaml")["env_vars"]


def test_one_ray_version_everywhere():
    import ray

    pins = {line.split("==")[1] for name in ("cpu.txt", "cluster.txt")
            for line in (REPO / "constraints" / name).read_text().splitlines() if line.startswith("ray==")}
    image = re.search(r"^FROM rayproject/ray:([\d.]+)-", (CLUSTER / "Dockerfile").read_text(), re.M).group(1)
    assert pins == {ray.__version__} == {image}


def test_runtime_env_example_is_one_ray_accepts():
    from ray.runtime_env import RuntimeEnv

    env = _load("runtime_env.yaml")
    assert set(env) <= RuntimeEnv.known_fields
    RuntimeEnv(**env)
    assert env["working_dir"] == "."


@pytest.mark.parametrize("cluster", CLUSTERS)
@pytest.mark.parametrize("experiment", CLUSTER_EXPERIMENTS)
def test_every_role_of_the_paper_configs_fits_a_node_type(cluster, experiment):
    nodes = CLUSTERS[cluster]()
    head = nodes.pop("head")
    assert head[0]["CPU"] == 0  # drivers only: nothing that reserves a CPU lands on the head
    config = load_config(REPO / "experiments" / experiment)
    declared = {name for resources, _ in nodes.values() for name in resources}
    total = {name: sum(r.get(name, 0) * most for r, most in nodes.values()) for name in declared}
    found = roles(config, shards=WIKI18_SHARDS)
    for role in found:
        missing = set(role.bundle) - declared
        assert not missing, f"{experiment}: {role.name} asks for {missing}, which no node type of {cluster} has"
        assert any(role.fits(r) for r, _ in nodes.values()), \
            f"{experiment}: one {role.name} ({role.bundle}) fits no node type of {cluster}: {nodes}"
        count = role.count * (WIKI18_SHARDS if role.per_shard else 1)
        for name, amount in role.bundle.items():
            assert count * amount <= total[name], f"{experiment}: {role.name} x {count} > {cluster}"
    # CPU-only roles that name `cpu_node` must never take a GPU node's CPUs, and the nodes that have it have no GPU.
    assert all(r.get("GPU", 0) == 0 for r, _ in nodes.values() if "cpu_node" in r)
    if "sweep" in config.run.stages:  # trials at once each train, serve and judge on their own resources
        trials = config.sweep.max_concurrent_trials
        phases = [pick(found, "train worker"), pick(found, "student replica"),
                  pick(found, "teacher replica") if config.scoring.judge else []]
        assert trials * peak(phases)[1] <= total["GPU"]
        # ... and serve their own retrieval and rollout workers on the CPU nodes (the paper's index: 8 shards)
        cpu_nodes = sum(res["CPU"] * most for res, most in nodes.values() if "cpu_node" in res)
        per_trial = sum(role.total()[0] for role in pick(found, "rollout worker", *RETRIEVAL))
        assert trials * per_trial <= cpu_nodes, f"{cluster}: {trials} trials x {per_trial} CPUs > {cpu_nodes}"


def test_a_role_that_fits_nowhere_is_caught():
    config = load_config(REPO / "experiments" / "paper" / "distill.yaml", ["teacher_engine.gpus_per_replica=16"])
    nodes = CLUSTERS["aws"]()
    teacher = next(r for r in roles(config) if r.name.startswith("teacher"))
    assert not any(teacher.fits(r) for r, _ in nodes.values())


# GPU memory per GPU (GiB) of the instance types the launcher configs may name.
GPU_MEMORY = {"p4d.24xlarge": 40, "p4de.24xlarge": 80, "p5.48xlarge": 80, "a2-highgpu-8g": 40,
              "a2-ultragpu-8g": 80, "a3-highgpu-8g": 80}


@pytest.mark.parametrize("name", LAUNCHERS)
def test_the_paper_configs_size_training_for_the_clusters_gpus(name):
    """`train.gpu_memory_gib` of the paper configs is the GPU node type's, and every student they train fits
    it by the memory model (the stages refuse one that does not, before launch)."""
    from ray_distill.evaluation.grid import trained_students
    from ray_distill.training.sizing import fit_problem

    gpu_types = [t["node_config"].get("InstanceType") or t["node_config"].get("machineType")
                 for t in _load(name)["available_node_types"].values() if t["resources"].get("GPU")]
    assert len(gpu_types) == 1, gpu_types
    for experiment in ("paper/distill.yaml", "paper/sweep.yaml"):
        config = load_config(REPO / "experiments" / experiment)
        assert config.train.gpu_memory_gib == GPU_MEMORY[gpu_types[0]], experiment
        students = trained_students(config) if "sweep" in config.run.stages else [config.models.student]
        assert [fit_problem(config.train, s, config.train.gpu_memory_gib) for s in students] == [None] * len(students)


def test_what_a_stage_checks_and_what_the_router_places_come_from_the_same_roles():
    from ray_distill.distributed.resources import replica_bundles, requirement

    config = load_config(REPO / "experiments" / "quickstart.yaml", [
        "teacher_engine.replicas=2", "teacher_engine.gpus_per_replica=4", "teacher_engine.cpus_per_replica=2",
        "teacher_engine.resources={a100: 1}", "rollout.workers=3", "rollout.worker_cpus=2",
        "retrieval.replicas=2", "retrieval.router_cpus=1", "retrieval.shard_cpus=0.5"])
    # A tensor-parallel replica: one bundle per GPU, each with the replica's CPUs and custom resources.
    assert replica_bundles(4, 2, {"a100": 1}) == [{"GPU": 1, "CPU": 2, "a100": 1}] * 4
    [teacher] = pick(roles(config), "teacher replica")
    assert teacher.bundle == {"CPU": 8, "GPU": 4, "a100": 4} and teacher.total() == (16, 8)
    plan, custom = requirement(pick(roles(config, shards=3), "teacher replica", "rollout worker", *RETRIEVAL))
    assert sorted(plan.values()) == [(2, 0), (3, 0), (6, 0), (16, 8)]  # routers, 2 x 3 shards, workers, teacher
    assert custom["teacher_engine.resources"] == {"a100": 4}
    # The sweep's trial peak: the largest of its phases, which never overlap, plus the trial's driver.
    assert peak([pick(roles(config), "teacher replica"), pick(roles(config), "rollout worker")], 1) == (17, 8)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_the_fake_cluster_config_is_generated_from_the_real_one(name):
    """What the autoscaling test runs (tests/test_fake_cluster.py) is the launcher config's node types,
    scaled down: a node type added, renamed or resized in the real config shows up in the fake one."""
    from jsonschema import ValidationError

    from ray_distill.distributed.fake_cluster import HEAD_TYPE, fake_config, validate

    real = _load(name)
    fake = fake_config(real, "127.0.0.1:6380", cpus=2, gpus=1, idle_timeout_minutes=0.25)
    validate(fake)  # Ray's schema, without the defaults that the fake provider cannot fill in
    head = real["head_node_type"]
    assert fake["head_node_type"] == HEAD_TYPE == "ray.head.default"
    assert fake["available_node_types"][HEAD_TYPE]["resources"] == real["available_node_types"][head]["resources"]
    workers = {n: t for n, t in real["available_node_types"].items() if n != head}
    assert set(fake["available_node_types"]) == {HEAD_TYPE, *workers}
    for node, spec in workers.items():
        scaled = fake["available_node_types"][node]
        assert (scaled["min_workers"], scaled["max_workers"]) == (spec.get("min_workers", 0), spec["max_workers"])
        custom = {k: v for k, v in spec["resources"].items() if k not in ("CPU", "GPU")}
        assert {k: v for k, v in scaled["resources"].items() if k not in ("CPU", "GPU", "object_store_memory")} == custom
        assert scaled["resources"]["CPU"] == min(2, spec["resources"]["CPU"])
        assert scaled["resources"].get("GPU", 0) == min(1, spec["resources"].get("GPU", 0))
    assert fake["max_workers"] == real["max_workers"] and fake["idle_timeout_minutes"] == 0.25
    assert fake["provider"]["type"] == "fake_multinode" and fake["provider"]["gcs_address"] == "127.0.0.1:6380"
    fake["available_node_types"][next(iter(workers))]["max_workerz"] = 1
    with pytest.raises(ValidationError):
        validate(fake)
    with pytest.raises(ValueError, match="head_node_type"):
        fake_config({**real, "head_node_type": "nope"}, "127.0.0.1:6380")


V1_EVENT = ("Error: No available node types can fulfill resource request {'CPU': 1.0, 'GPU': 1.0, 'tpu_v9': 1.0}. "
            "Add suitable node types to this cluster to resolve this issue.")
V2_EVENT = ("No available node types can fulfill resource requests {'CPU': 2.0, 'cpu_node': 0.001}*3, "
            "{'CPU': 1.0}*1. Add suitable node types to this cluster to resolve this issue.")


def test_the_autoscalers_infeasible_verdict_is_read_and_traced_to_the_role_that_asked():
    from ray_distill.distributed.autoscaler import infeasible_error, infeasible_shapes, roles_asking

    assert infeasible_shapes(V1_EVENT) == [{"CPU": 1.0, "GPU": 1.0, "tpu_v9": 1.0}]
    assert infeasible_shapes(V2_EVENT) == [{"CPU": 2.0, "cpu_node": 0.001}, {"CPU": 1.0}]
    assert infeasible_shapes("Adding 1 node(s) of type cpu_r6i. {'CPU': 1}") == []
    config = load_config(None, ["train.gpus_per_worker=1", "train.cpus_per_worker=1", "train.resources={tpu_v9: 1}",
                                "rollout.worker_cpus=2", "rollout.resources={cpu_node: 0.001}"])
    train_roles = [r for r in roles(config) if "train" in r.stages]
    assert [r.name for r in roles_asking(infeasible_shapes(V1_EVENT)[0], train_roles)] == ["train worker"]
    # What tells roles apart is their GPUs and custom resources: a library may add CPUs around them (a probe
    # task reserves none), or nothing of the config's (the usual case: no custom resources).
    assert [r.name for r in roles_asking({"CPU": 3.0, "GPU": 1.0, "tpu_v9": 1.0}, train_roles)] == ["train worker"]
    # The read tasks of its training data carry the train workers' custom resources, not their GPUs.
    assert [r.name for r in roles_asking({"CPU": 1.0, "tpu_v9": 1.0}, train_roles)] == ["train worker"]
    plain = load_config(None, ["train.gpus_per_worker=1", "student_engine.gpus_per_replica=1"])
    assert [r.name for r in roles_asking({"GPU": 1.0}, [r for r in roles(plain) if "train" in r.stages])] == [
        "train worker"]
    assert [r.name for r in roles_asking({"GPU": 1.0}, [r for r in roles(plain) if "sweep" in r.stages])] == [
        "train worker", "student replica"]  # the sweep starts both: the message names both
    assert roles_asking({"CPU": 1.0, "GPU": 2.0}, train_roles) == []  # not this stage's: only logged
    # Nor is another job's bare GPU with more CPUs than any node has, where no custom resource names the role.
    assert roles_asking({"CPU": 128.0, "GPU": 1.0}, [r for r in roles(plain) if "train" in r.stages]) == []
    generate_roles = [r for r in roles(config) if "generate" in r.stages]
    assert roles_asking(infeasible_shapes(V2_EVENT)[0], generate_roles)[0].name.startswith("rollout worker")
    role = roles_asking(infeasible_shapes(V1_EVENT)[0], train_roles)
    message = str(infeasible_error("train", role, infeasible_shapes(V1_EVENT)[0], V1_EVENT))
    assert message.startswith("[train] no node type of this cluster can hold a train worker: it asks for "
                              "{CPU: 1, GPU: 1, tpu_v9: 1} (`train`")
    assert "train.resources" in message and V1_EVENT in message


def test_training_uses_nccl_only_where_the_scheduled_gpus_have_cuda():
    from ray_distill.distributed.training import backend_for

    assert backend_for(1, cuda=True) == "nccl"
    assert backend_for(1, cuda=False) == "gloo"  # logical GPUs: scheduled as GPU workers, computing on CPU
    assert backend_for(0, cuda=True) == "gloo"
