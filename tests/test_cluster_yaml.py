"""cluster.yaml against Ray's own cluster launcher: its schema, and the commands `ray up` runs.

The schema test is what `ray up` checks first. The rendering tests go further, through Ray's
own code, without AWS: `get_or_create_head_node` (the head path of `ray up`) and the autoscaler's
`RayInstaller` (how the head sets up each worker type) run against a provider that launches
nothing and a process runner that records every ssh, rsync and docker command instead of running
it. What they check is what a new user's `ray up` would do on the nodes.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
WORKER_TYPES = ("cpu_spot", "gpu")
TOKEN = "raycat-test-token-0f3c"  # the fake local token: it must travel as a file, never inline
CREDENTIAL_PATTERNS = re.compile(
    r"AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|aws_secret_access_key|aws_access_key_id"
    r"|aws_session_token|" + TOKEN,
    re.IGNORECASE,
)


def _load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_rays_schema_and_checks():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_load()))


def test_a_broken_cluster_yaml_is_caught():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = _load()
    broken["available_node_types"]["gpu"]["min_workers"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_images_carry_the_pinned_ray_and_python_and_setup_the_makefile_pins():
    import ray

    config = _load()
    images = [config["docker"]["image"]] + [
        t.get("docker", {}).get("worker_image", config["docker"]["image"])
        for t in config["available_node_types"].values()
    ]
    for image in images:
        assert re.fullmatch(rf"rayproject/ray:{re.escape(ray.__version__)}-py311-(cpu|gpu)", image)
    pins = re.search(r"^PINS\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert pins, "the Makefile's PINS line moved"
    setup = " ".join(config["worker_setup_commands"])
    for pin in pins.group(1).split():
        assert pin.strip("'\"") in setup, f"{pin} from the Makefile is not installed"


# ---- what `ray up` runs, rendered by Ray's own code ------------------------------------------


class _Recorder:
    """A process runner for Ray's command runners: records, runs nothing, answers like a DLAMI
    host with Docker and no container yet (so every node gets a fresh `docker run`)."""

    ANSWERS = (
        ("command -v docker", b"/usr/bin/docker"),
        (".State.Running", b"false"),
        (".Config.Env", b'["PATH=/home/ray/anaconda3/bin", "HOME=/home/ray"]'),
        ("printenv HOME", b"/home/ray"),
        ("docker info", b"map[runc:{runc [] <nil>}]"),  # no automatic NVIDIA runtime
        ("/proc/meminfo", b"MemAvailable: 16000000 kB"),
    )

    def __init__(self) -> None:
        self.commands: list[str] = []

    def _record(self, cmd) -> str:
        text = " ".join(cmd) if isinstance(cmd, list | tuple) else str(cmd)
        self.commands.append(text)
        return text

    def check_call(self, cmd, **_) -> int:
        self._record(cmd)
        return 0

    def check_output(self, cmd, **_) -> bytes:
        text = self._record(cmd)
        return next((out for key, out in self.ANSWERS if key in text), b"")


def _provider_class():
    from ray.autoscaler.node_provider import NodeProvider

    class LaunchNothing(NodeProvider):
        """Keeps tags in memory and records launch requests (what EC2 would be asked for)."""

        def __init__(self, provider_config, cluster_name):
            super().__init__(provider_config, cluster_name)
            self.tags: dict[str, dict] = {}
            self.launched: list[dict] = []

        def non_terminated_nodes(self, tag_filters):
            return [n for n, t in self.tags.items() if tag_filters.items() <= t.items()]

        def node_tags(self, node_id):
            return dict(self.tags.setdefault(node_id, {}))

        def set_node_tags(self, node_id, tags):
            self.tags.setdefault(node_id, {}).update(tags)

        def create_node(self, node_config, tags, count):
            self.launched.append(node_config)
            self.tags["i-head"] = dict(tags)

        def external_ip(self, node_id):
            return "203.0.113.10"

        def internal_ip(self, node_id):
            return "10.0.0.10" if node_id == "i-head" else "10.0.0.20"

        def is_running(self, node_id):
            return True

        def is_terminated(self, node_id):
            return False

    return LaunchNothing


@dataclass
class Rendered:
    head_launch: dict  # the head's EC2 launch request
    worker_node_configs: dict[str, dict]  # the autoscaler's launch request per worker type
    commands: dict[str, list[str]]  # node type -> every command `ray up` / the autoscaler ran

    def docker_run(self, node_type: str) -> str:
        (run,) = [c for c in self.commands[node_type] if "docker run " in c]
        return run

    def ray_start(self, node_type: str) -> str:
        (start,) = [c for c in self.commands[node_type] if " ray start " in c]
        return start


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Rendered:
    from ray.autoscaler._private import commands
    from ray.autoscaler._private.aws.cloudwatch import cloudwatch_helper
    from ray.autoscaler._private.util import prepare_config, validate_config
    from ray.autoscaler.v2.instance_manager import config as v2_config
    from ray.autoscaler.v2.instance_manager.ray_installer import RayInstaller
    from ray.core.generated.instance_manager_pb2 import Instance

    home = tmp_path_factory.mktemp("home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(TOKEN)  # `ray get-auth-token --generate`
    (home / "raycat").mkdir()  # what the head holds after the head's sync, for its workers
    key = home / "raycat-key.pem"  # what the AWS bootstrap would set up
    key.write_text("not a key")
    head_config: dict = {}

    def keep_head_config(config, provider, no_restart):
        config, remote_file = set_up_head(config, provider, no_restart)
        head_config.update(json.loads(Path(remote_file.name).read_text()))
        return config, remote_file

    class NoCloudwatch:
        def __init__(self, *args, **kwargs):
            pass

        def update_from_config(self, *args, **kwargs):
            pass

    set_up_head = commands._set_up_config_for_head_node
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.chdir(ROOT)  # `ray up` runs from the checkout: "." is the source tree
        # the hashes only decide whether to redo setup; hashing would walk .venv
        mp.setattr(commands, "hash_runtime_conf", lambda *a, **k: ("runtime", "contents"))
        mp.setattr(v2_config, "hash_runtime_conf", lambda *a, **k: ("runtime", "contents"))
        mp.setattr(commands, "_set_up_config_for_head_node", keep_head_config)
        mp.setattr(cloudwatch_helper, "CloudwatchHelper", NoCloudwatch)

        config = prepare_config(_load())
        validate_config(config)
        config["auth"]["ssh_private_key"] = str(key)
        provider = _provider_class()(config["provider"], config["cluster_name"])
        runners = {t: _Recorder() for t in ("head", *WORKER_TYPES)}
        commands.get_or_create_head_node(
            config,
            printable_config_file=str(CLUSTER_YAML),
            no_restart=False,
            restart_only=False,
            yes=True,
            override_cluster_name=None,
            _provider=provider,
            _runner=runners["head"],
        )
        assert provider.tags["i-head"].get("ray-node-status") == "up-to-date"

        workers = v2_config.AutoscalingConfig(head_config)
        for node_type in WORKER_TYPES:
            installer = RayInstaller(provider, workers, runners[node_type])
            instance = Instance(cloud_instance_id=f"i-{node_type}", instance_type=node_type)
            installer.install_ray(instance, head_node_ip="10.0.0.10")  # raises unless up to date

    return Rendered(
        head_launch=provider.launched[0],
        worker_node_configs={t: workers.get_cloud_node_config(t) for t in WORKER_TYPES},
        commands={t: r.commands for t, r in runners.items()},
    )


def test_every_node_runs_rays_python_311_image_the_gpu_type_its_cuda_build(rendered):
    import ray

    expected = {"head": "cpu", "cpu_spot": "cpu", "gpu": "gpu"}
    for node_type, flavour in expected.items():
        image = f"rayproject/ray:{ray.__version__}-py311-{flavour}"
        assert rendered.docker_run(node_type).endswith(f"{image} bash)'"), node_type
        assert any(f"docker pull {image}" in c for c in rendered.commands[node_type])


def test_gpu_type_gets_the_hosts_gpus_and_cpu_types_do_not(rendered):
    assert "--gpus all" in rendered.docker_run("gpu")
    for node_type in ("head", "cpu_spot"):
        assert "--gpus" not in rendered.docker_run(node_type)


def test_head_takes_no_work_and_workers_join_it(rendered):
    head = rendered.ray_start("head")
    assert "ray start --head" in head
    assert '{"CPU":0}' in head or "--num-cpus=0" in head  # RAY_OVERRIDE_RESOURCES from the type
    for node_type in WORKER_TYPES:
        start = rendered.ray_start(node_type)
        assert "ray start --address=$RAY_HEAD_IP:6379" in start
        assert "RAY_HEAD_IP=10.0.0.10" in start and f"RAY_NODE_TYPE_NAME={node_type}" in start


def test_auth_token_reaches_every_node_as_a_file_and_token_mode_every_ray_start(rendered):
    for node_type, commands in rendered.commands.items():
        token_sync = [c for c in commands if c.startswith("rsync") and "auth_token" in c]
        assert token_sync, f"{node_type}: the token file is not synced"
        run = rendered.docker_run(node_type)
        assert re.search(r"-v \S+/\.ray/auth_token:/home/ray/\.ray/auth_token ", run), node_type
        assert "--env RAY_AUTH_MODE=token" in run, node_type
        assert "RAY_AUTH_MODE=token ray start" in rendered.ray_start(node_type), node_type


def test_raycat_is_installed_once_per_node_from_the_synced_source(rendered):
    for node_type, commands in rendered.commands.items():
        assert re.search(r"-v \S+/raycat:/home/ray/raycat ", rendered.docker_run(node_type))
        installs = [c for c in commands if "$HOME/raycat[" in c]
        assert len(installs) == 1 and "pip install" in installs[0], node_type
        assert not any("pip install -e" in c or "--working-dir" in c for c in commands)
        assert not any("ray-wheels" in c for c in commands), "Ray's default setup crept in"
    # the jobs the docs submit are where the source lands in the image
    assert "python /home/ray/raycat/jobs/infer.py" in (ROOT / "docs" / "cluster.md").read_text()


def test_launch_requests_carry_an_instance_profile_and_a_large_gp3_root(rendered):
    requests = {"head": rendered.head_launch, **rendered.worker_node_configs}
    for node_type, request in requests.items():
        assert request["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), node_type
        (root,) = request["BlockDeviceMappings"]
        assert root["Ebs"]["VolumeType"] == "gp3" and root["Ebs"]["VolumeSize"] >= 200, node_type
    assert rendered.head_launch["IamInstanceProfile"] != requests["gpu"]["IamInstanceProfile"]
    assert requests["cpu_spot"]["InstanceMarketOptions"]["MarketType"] == "spot"


def test_no_credentials_in_the_file_or_in_any_rendered_command(rendered):
    texts = [CLUSTER_YAML.read_text()] + [c for cs in rendered.commands.values() for c in cs]
    leaks = [m.group(0) for t in texts for m in CREDENTIAL_PATTERNS.finditer(t)]
    assert not leaks, leaks
