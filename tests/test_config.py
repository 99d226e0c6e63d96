import pytest
import yaml

from raycat.config import ConfigError, RaycatConfig, load_config, parse_config


def test_defaults_validate_and_cover_all_bands():
    cfg = parse_config(None)
    assert cfg.cutouts.bands[0] == "galex_fuv" and len(cfg.cutouts.bands) == 9
    assert cfg.model.n_bins == 400 and cfg.model.z_max == 1.6


@pytest.mark.parametrize(
    "data, field",
    [
        ({"cutouts": {"bands": ["ps1_q"]}}, "cutouts.bands"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"model": {"arch": "vgg"}}, "model.arch"),
        ({"trian": {}}, "trian"),
    ],
)
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


_SELF_EXPLANATORY = {
    "epochs",
    "weight_decay",
    "seed",
    "batch_size",
    "use_gpu",
    "pdf_dtype",
    "attributions",
    "attribution_method",
    "attribution_permutations",
}


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


@pytest.mark.parametrize(
    "model", [{"z_min": 1.0, "z_max": 0.5}, {"z_min": 1.6}, {"z_min": 0.7, "z_max": 0.7}]
)
def test_an_empty_redshift_grid_is_refused_before_any_work(model):
    with pytest.raises(ConfigError, match=r"model: .*z_min \(.*\) must be below z_max") as err:
        parse_config({"model": model})
    assert "\n" not in str(err.value)
    assert parse_config({"model": {"z_min": 0.1, "z_max": 0.2}}).model.z_min == 0.1


def test_no_bands_is_refused():
    with pytest.raises(ConfigError, match=r"cutouts\.bands: .*no bands") as err:
        parse_config({"cutouts": {"bands": []}})
    assert "\n" not in str(err.value)


SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETVALUE"


@pytest.mark.parametrize(
    "options, path",
    [
        ({"key": "AKIAEXAMPLE", "secret": SECRET}, "data.storage_options.key"),
        ({"anon": False, "secret": SECRET}, "data.storage_options.secret"),
        ({"token": SECRET}, "data.storage_options.token"),
        ({"password": SECRET}, "data.storage_options.password"),
        (
            {"client_kwargs": {"aws_access_key_id": SECRET}},
            "data.storage_options.client_kwargs.aws_access_key_id",
        ),
        (
            {"client_kwargs": {"AWS_SECRET_ACCESS_KEY": SECRET}},
            "data.storage_options.client_kwargs.AWS_SECRET_ACCESS_KEY",
        ),
        (
            {"client_kwargs": {"aws_session_token": SECRET}},
            "data.storage_options.client_kwargs.aws_session_token",
        ),
        ({"a": {"b": [{"client_secret": SECRET}]}}, "data.storage_options.a.b[0].client_secret"),
        ({"Credentials": {"x": SECRET}}, "data.storage_options.Credentials"),
        ({"sas_token": SECRET}, "data.storage_options.sas_token"),
        ({"AccountKey": SECRET}, "data.storage_options.AccountKey"),
        (
            {"s3_additional_kwargs": {"SSECustomerKey": SECRET}},
            "data.storage_options.s3_additional_kwargs.SSECustomerKey",
        ),
        (
            {"client_kwargs": {"headers": {"Authorization": f"Bearer {SECRET}"}}},
            "data.storage_options.client_kwargs.headers.Authorization",
        ),
    ],
)
def test_credentials_in_the_config_are_refused_without_echoing_them(options, path):
    with pytest.raises(ConfigError) as err:
        parse_config({"data": {"storage_options": options}})
    message = str(err.value)
    assert f"config: {path}: looks like a credential" in message
    assert "credential chains" in message and "\n" not in message
    assert SECRET not in message and "AKIAEXAMPLE" not in message
    assert SECRET not in repr(err.value) and err.value.__cause__ is None
    assert err.value.__suppress_context__  # the pydantic error (holding the input) is not shown
    with pytest.raises(ValueError) as raw:  # built directly: pydantic's own error hides it too
        RaycatConfig.model_validate({"data": {"storage_options": options}})
    assert path in str(raw.value) and SECRET not in str(raw.value)


def test_credentials_in_any_dict_of_the_config_are_refused(tmp_path):
    data = {"cutouts": {"softening": {"ps1_g": 1.0, "api_key": 3.0}}}
    with pytest.raises(ConfigError, match=r"config: cutouts\.softening\.api_key: looks like"):
        parse_config(data)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"storage_options": {"secret": SECRET}}}))
    with pytest.raises(ConfigError, match=r"data\.storage_options\.secret") as err:
        load_config(str(path))
    assert SECRET not in str(err.value)


def test_ordinary_storage_options_are_kept():
    options = {
        "anon": True,
        "use_ssl": True,
        "requester_pays": True,
        "default_block_size": 2**20,
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "x"},
        "config_kwargs": {"retries": {"total_max_attempts": 1}},
        "s3_additional_kwargs": {"SSEKMSKeyId": "alias/tiles"},
    }
    assert parse_config({"data": {"storage_options": options}}).data.storage_options == options


def test_options_from_outside_a_config_can_be_checked_too():
    from raycat.config import refuse_credentials

    refuse_credentials({"anon": True}, "--storage-options")
    with pytest.raises(ConfigError, match=r"^--storage-options\.token: looks like a credential"):
        refuse_credentials({"token": SECRET}, "--storage-options")
