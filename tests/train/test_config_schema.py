"""One declaration per config key (``scrcl.train.config.KEYS``) makes its flag, its check, its default and its help."""

from __future__ import annotations

import pytest

from scrcl.errors import UserError
from scrcl.train import cli, config


@pytest.fixture
def extra_keys(monkeypatch):
    """Two keys that exist only in this test, declared the way every key is."""
    width = config.Key("fixture_width", int, "a width that only this test knows", default=3, low=1)
    switch = config.Key("fixture_switch", bool, "a switch that only this test knows", default=True)
    monkeypatch.setattr(config, "KEYS", config.KEYS + (width, switch))
    return width, switch


def test_a_new_key_appears_in_help_defaults_flags_and_validation(extra_keys):
    help_text = cli.build_parser().format_help()
    assert "--fixture-width" in help_text and "a width that only this test knows (default: 3)" in help_text
    assert "--no-fixture-switch" in help_text
    resolved = config.resolve_config(dataset="pbmc68k")
    assert resolved["fixture_width"] == 3 and resolved["fixture_switch"] is True
    for argv, expected in ((["--fixture-width=7"], 7), (["--fixture-width", "7"], 7)):  # W&B's spelling and the usual one
        args = cli.build_parser().parse_args(argv)
        assert config.resolve_config(dataset="pbmc68k", overrides={"fixture_width": args.fixture_width})["fixture_width"] == expected
    for argv in (["--no-fixture-switch"], ["--fixture-switch=false"]):
        args = cli.build_parser().parse_args(argv)
        assert config.resolve_config(dataset="pbmc68k", overrides={"fixture_switch": args.fixture_switch})["fixture_switch"] is False
    with pytest.raises(UserError, match="fixture_width must be at least 1, got 0 .fixture_width: a width that only this test knows"):
        config.resolve_config(dataset="pbmc68k", overrides={"fixture_width": 0})
    with pytest.raises(UserError, match="fixture_width must be a whole number, got 'wide'"):
        config.resolve_config(dataset="pbmc68k", overrides={"fixture_width": "wide"})
    with pytest.raises(UserError, match="fixture_switch must be true or false"):
        config.resolve_config(dataset="pbmc68k", overrides={"fixture_switch": "maybe"})


def test_help_gives_a_method_keys_last_default_and_one_default_only():
    """A method key's default: the published setting, else the generic config, else the schema's own default (what
    a key neither generic config sets gets); a key's help never states a second default (--graph-pcs and --gene-dim say
    what unset means instead)."""
    help_text = " ".join(cli.build_parser().format_help().split())
    chain = "(default: the dataset's published setting, else configs/generic_sc.yaml / generic_st.yaml"
    schema = {k.name: k.default for k in config.KEYS}
    assert f"{chain}, else {schema['ema_decay']})" in help_text  # ema_decay: in neither generic config
    assert f"{chain}, else {str(schema['refine']).lower()})" in help_text  # refine (a bool, written as YAML writes it)
    pcs = help_text.rsplit("--graph-pcs GRAPH_PCS", 1)[1].split(" --", 1)[0]  # its entry, not the usage line
    assert pcs.count("default:") == 1 and "the reference's rule" in pcs
    twice = [k.name for k in config.KEYS if k.flag and cli._help(k).count("default:") > 1]
    assert not twice, f"help states two defaults: {twice}"


def test_a_new_key_goes_through_the_command_line(extra_keys, capsys):
    assert cli.main(["--dataset", "pbmc68k", "--fixture-width", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: fixture_width must be at least 1, got 0")


def test_every_key_has_a_kind_a_help_and_a_flag_unless_the_program_sets_it():
    names = [k.name for k in config.KEYS]
    assert len(names) == len(set(names))
    for k in config.KEYS:
        assert k.kind in (int, float, str, bool, "pair", "seeds") and k.help, k.name
        assert not k.choices or k.default is None or k.default in k.choices, k.name
    flags = {a.dest for a in cli.build_parser()._actions}
    assert {k.name for k in config.KEYS if k.flag} <= flags and "resume" in flags


def test_generic_and_published_configs_only_use_declared_keys():
    declared = {k.name for k in config.KEYS}
    for path in sorted(config.CONFIG_DIR.glob("**/*.yaml")):
        if path.parent.name in ("sweeps", "ablations"):
            continue
        assert set(config.read_yaml(path) or {}) <= declared, path
