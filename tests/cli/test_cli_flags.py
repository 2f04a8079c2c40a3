"""The flags generated from the models' settings: one namespace while the models agree on a
setting's type, ``--MODEL.NAME`` for a model that gives the name another type."""

import json
from dataclasses import dataclass

import pytest

from pushforward.cli import build_parser, main, setting_flags
from pushforward.cli.flags import given_settings
from pushforward.core import ConfigError, Model, ModelConfig, ModelSpec, setting
from pushforward.models.registry import MODELS


class Widths(Model):
    """A model fitted in closed form whose one setting, ``hidden``, is a single integer where
    the registered models' ``hidden`` is a list of widths."""

    has_encoder, has_exact_density, trained, generative = False, False, False, False

    def __init__(self, hidden: int) -> None:
        self.hidden = hidden

    def get_config(self) -> dict:
        return {"hidden": self.hidden}


@dataclass
class WidthsConfig(ModelConfig):
    hidden: int = setting(3, "one width, not a list")

    def build(self, ds) -> Widths:
        return Widths(self.hidden)


@pytest.fixture
def widths(monkeypatch):
    """The registry with the model ``widths`` added after every other."""
    monkeypatch.setitem(MODELS, "widths", ModelSpec(Widths, WidthsConfig, "one integer width"))


def fit_args(*argv):
    return build_parser().parse_args(["fit", *map(str, argv)])


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_registered_setting_name_has_one_type_and_so_one_flag():
    flags = setting_flags()
    assert not [f.option for f in flags if f.scoped]
    assert len({f.name for f in flags}) == len(flags)


def test_a_model_giving_a_name_another_type_gets_its_own_flag(widths):
    flags = {f.option: f for f in setting_flags()}
    assert flags["--hidden"].owners[:1] == ("ae",)  # the models that were there keep theirs
    assert "widths" not in flags["--hidden"].owners
    assert flags["--widths.hidden"].owners == ("widths",)
    assert "widths: see --widths.hidden" in flags["--hidden"].help()
    assert "one width, not a list (default 3)" in flags["--widths.hidden"].help()


def test_fit_help_lists_both_flags(widths, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--hidden HIDDEN" in out and "--widths.hidden WIDTHS.HIDDEN" in out


def test_values_go_to_the_model_being_fitted(widths):
    args = fit_args("ae", "--hidden", "8,4")
    assert given_settings(args, args.flags, "ae") == {"hidden": [8, 4]}
    args = fit_args("widths", "--widths.hidden", 5)
    assert given_settings(args, args.flags, "widths") == {"hidden": 5}


def test_a_flag_of_the_wrong_namespace_is_refused_by_name(widths):
    args = fit_args("ae", "--widths.hidden", 5)
    with pytest.raises(ConfigError, match=r"--widths\.hidden is a setting of widths, not of ae"):
        given_settings(args, args.flags, "ae")
    args = fit_args("widths", "--hidden", "8,4")
    with pytest.raises(ConfigError, match=r"widths's hidden is --widths\.hidden"):
        given_settings(args, args.flags, "widths")


def test_fit_routes_the_namespaced_flag_into_the_models_settings(widths, capsys, tmp_path):
    code, out, err = run(capsys, "fit", "widths", "--data", "ring8", "-n", 50,
                         "--widths.hidden", 7, "--dry-run")  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    assert record["run"]["settings"] == {"hidden": 7}
    assert record["model"] == {"kind": "widths", "config": {"hidden": 7}}
    code, _, err = run(capsys, "fit", "ae", "--data", "ring8", "--widths.hidden", 7,
                       "--out", tmp_path / "r")  # fmt: skip
    assert code == 2
    assert err.strip() == "pushforward: error: --widths.hidden is a setting of widths, not of ae"
    assert not (tmp_path / "r").exists()
