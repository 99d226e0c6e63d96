import json
import subprocess
import sys


def _raycat(*args):
    return subprocess.run(
        [sys.executable, "-m", "raycat", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_subcommands():
    out = _raycat("--help")
    assert out.returncode == 0 and "simulate" in out.stdout


def test_every_subcommand_has_help():
    from raycat.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        out = _raycat(name, "--help")
        assert out.returncode == 0, name
        assert "usage" in out.stdout


def test_bad_argument_is_one_line_without_traceback():
    out = _raycat("simulate", "--out", "x", "--n-galaxies", "-3")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and "n-galaxies" in out.stderr


def test_help_is_fast_because_heavy_modules_load_lazily():
    code = "import sys, raycat.cli; print(any(m in sys.modules for m in ('torch','ray','galsim')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_bad_config_value_is_one_line_naming_the_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  epochs: -1\n")
    out = _raycat("train", "--config", str(config))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.epochs" in lines[0] and "Traceback" not in out.stderr


def test_missing_config_file_is_one_line(tmp_path):
    out = _raycat("infer", "--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "not found" in out.stderr and "Traceback" not in out.stderr


def test_stability_without_config_is_one_line(tmp_path):
    out = _raycat("evaluate", "--catalog", str(tmp_path), "--stability")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_bad_override_is_one_line_naming_the_field(tmp_path):
    """Command-line overrides are validated like the config file, not set as they come."""
    config = tmp_path / "ok.yaml"
    config.write_text("infer:\n  mode: resume\n")
    out = _raycat("infer", "--config", str(config), "--mode", "sideways")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "infer.mode" in lines[0] and "Traceback" not in out.stderr


def test_overrides_make_a_validated_copy():
    from raycat.cli import build_parser, overrides, with_overrides
    from raycat.config import parse_config

    cfg = parse_config({})
    args = build_parser().parse_args(
        ["infer", "--config", "x.yaml", "--mode", "new", "--catalog", "elsewhere"]
    )
    changed = with_overrides(cfg, overrides(args))
    assert (changed.infer.mode, changed.infer.catalog) == ("new", "elsewhere")
    assert cfg.infer.mode == "resume" and changed.cutouts == cfg.cutouts


def test_credentials_on_the_index_command_line_are_refused_without_echoing(tmp_path):
    secret = "wJalrXUtnFEMI-not-a-real-secret"
    options = json.dumps({"key": "AKIA-fake", "secret": secret})
    out = _raycat("index", "--store", str(tmp_path), "--storage-options", options)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--storage-options" in out.stderr and "credential" in out.stderr
    assert secret not in out.stderr and secret not in out.stdout


def test_credentials_on_the_tiles_command_line_are_refused_without_echoing(tmp_path):
    secret = "wJalrXUtnFEMI-not-a-real-secret"
    options = json.dumps({"secret": secret})
    out = _raycat(
        "tiles",
        "--survey",
        "unwise",
        "--bands",
        "unwise_w1",
        "--out",
        str(tmp_path / "i"),
        "--storage-options",
        options,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "credential" in out.stderr and secret not in out.stderr + out.stdout
    assert not (tmp_path / "i").exists()


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    out = _raycat("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"raycat {version('raycat')}"
