"""cluster.yaml against Ray's own cluster-launcher schema (what `ray up` checks first)."""

from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).parent.parent / "cluster.yaml"


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


def test_head_runs_no_heavy_work_and_versions_are_pinned():
    config = _load()
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["CPU"] == 0
    setup = " ".join(config["setup_commands"])
    assert "torch==2.14.1" in setup and "ray[default,data,train]==2.60.0" in setup
    assert not any(
        k in CLUSTER_YAML.read_text() for k in ("aws_secret", "AWS_SECRET", "aws_access_key_id")
    )
