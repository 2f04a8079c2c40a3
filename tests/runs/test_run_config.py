"""What a run records of its settings: the ones a user chooses, not the ones filled from the
data (those are the model's config, stored beside them)."""

import pytest

from pushforward.core import ConfigError, user_settings
from pushforward.models.registry import MODELS
from pushforward.runs import RunConfig


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_run_records_only_the_settings_a_user_chooses(name):
    spec = MODELS[name]
    rc = RunConfig(name, "ring8")
    stored = rc.to_dict()["settings"]
    assert set(stored) == set(user_settings(spec.config))
    derived = {f for f in spec.config.__dataclass_fields__ if f not in stored}
    assert "dim" in derived or name in ("pca", "ppca")
    assert RunConfig.from_dict(rc.to_dict()).to_dict() == rc.to_dict()


def test_a_derived_setting_is_not_a_setting_a_user_may_give():
    with pytest.raises(ConfigError, match="unknown setting 'dim'"):
        RunConfig.from_flat({"model": "vae", "data": "ring8", "dim": 3})
