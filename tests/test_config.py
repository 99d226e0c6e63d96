import pytest
import yaml

from raycat.config import ConfigError, RaycatConfig, load_config, parse_config


def test_defaults_validate_and_cover_all_bands():
    cfg = parse_config(None)
    assert cfg.cutouts.bands[0] == "galex_fuv" and len(cfg.cutouts.bands) == 9
    assert cfg.model.n_bins == 400 and cfg.model.z_max == 1.6


@pytest.mark.parametrize("data, field", [
    ({"cutouts": {"bands": ["ps1_q"]}}, "cutouts.bands"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"model": {"arch": "vgg"}}, "model.arch"),
    ({"trian": {}}, "trian"),
])
def test_bad_values_give_one_line_naming_the_field(data, field):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    message = str(err.value)
    assert "\n" not in message and field in message


def test_every_field_is_documented():
    def walk(model):
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, RaycatConfig.__base__):
                walk(annotation)
            else:
                assert info.description or name in _SELF_EXPLANATORY, f"{model.__name__}.{name}"
    walk(RaycatConfig)


_SELF_EXPLANATORY = {"epochs", "weight_decay", "seed", "batch_size", "use_gpu", "pdf_dtype",
                     "attributions", "attribution_method", "attribution_permutations"}


def test_load_yaml_file_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 3}}))
    assert load_config(str(path)).train.epochs == 3
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_yaml_objects_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("train: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(path))


def test_config_hash_tracks_model_and_cutout_settings_only():
    base = parse_config(None)
    assert base.config_hash() == parse_config({"train": {"epochs": 2}}).config_hash()
    assert base.config_hash() != parse_config({"cutouts": {"size_px": 48}}).config_hash()


def test_configuration_docs_match_the_code():
    from pathlib import Path

    from raycat.config import reference_markdown

    doc = Path(__file__).parent.parent / "docs" / "configuration.md"
    assert doc.read_text().strip() == reference_markdown().strip(), "run `make docs`"
