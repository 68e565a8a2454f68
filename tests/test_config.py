"""params/*.yaml -> validated PACConfig: good files load, bad values fail naming the key."""

from pathlib import Path

import pytest
import yaml

from pac.config import SCALES, ConfigError, PACConfig, config_from_dict, load_config
from pac.pipeline import frozen_settings

PARAMS = Path(__file__).resolve().parent.parent / "params"


def test_default_loads_and_resolves_scale():
    cfg = load_config()
    assert cfg.model.scale == "tiny"
    assert cfg.model.d_z == SCALES["tiny"]["d_z"]
    assert {g.name for g in cfg.data.groups} >= {"expert", "low_quality"}
    flat = cfg.flat()
    assert flat["loss.alpha"] == cfg.loss.alpha
    assert "data.groups.low_quality.quality" in flat


@pytest.mark.parametrize("preset", sorted(p.name for p in (PARAMS / "presets").glob("*.yaml")))
def test_every_preset_loads(preset):
    cfg = load_config(PARAMS / "presets" / preset)
    assert cfg.model.d_z == SCALES[cfg.model.scale]["d_z"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss.alpha=1.5", "loss.alpha=1.5 is outside the allowed range [0, 1]"),
        ("loss.beta=-1", "loss.beta=-1.0 is outside the allowed range [0, inf]"),
        ("loss.eta=-0.1", "loss.eta=-0.1 is outside the allowed range (0, inf)"),
        ("loss.eta=0", "loss.eta=0.0 is outside the allowed range (0, inf)"),
        ("model.scale=XXL", "model.scale: unknown scale 'XXL'"),
        ("train.zero_stage=4", "train.zero_stage=4: DeepSpeed ZeRO stages are 0-3"),
        ("loss.alpha=abc", "loss.alpha: expected a number"),
        ("loss.alpah=0.5", "unknown key loss.alpah"),
        ("rlft.tasks=[humanoid.fly]", "rlft.tasks: unknown task 'humanoid.fly'"),
        ("loss.variant=dqn", "loss.variant: 'dqn' is not one of"),
        ("eval.precision=fp16", "eval.precision: 'fp16' is not one of"),
        ("model.proprio_tokens=pooled",
         "model.proprio_tokens: 'pooled' is not one of scalar, joint, both"),
        ("data.groups=[{name: g, tasks: [point_mass.easy], alpha: 0.3}]",
         "data.groups.g: alpha=0.3, beta=None apply only with loss.variant=alpha_pac"),
    ],
)
def test_bad_values_fail_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert message in str(err.value)


def test_unknown_task_and_quality_in_a_group(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"extends: {PARAMS / 'default.yaml'}\n"
        "data:\n  groups:\n    - {name: g, tasks: [cartpole.fly], quality: 0.5}\n"
    )
    with pytest.raises(ConfigError, match="data.groups.g.tasks: unknown task 'cartpole.fly'"):
        load_config(bad)
    bad.write_text(
        f"extends: {PARAMS / 'default.yaml'}\n"
        "data:\n  groups:\n    - {name: g, tasks: [cartpole.balance], quality: 1.2}\n"
    )
    with pytest.raises(ConfigError, match=r"data.groups.g.quality=1.2 is outside .*\[0, 1\]"):
        load_config(bad)


def test_exponent_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads 3e-4 as a string; a float setting takes it as the number it means."""
    cfg = load_config(overrides=["train.lr_peak=3e-4", "train.lr_end=1E-5"])
    assert cfg.train.lr_peak == 3e-4 and cfg.train.lr_end == 1e-5
    f = tmp_path / "p.yaml"
    f.write_text("train:\n  lr_peak: 2e-4\n")
    assert load_config(f).train.lr_peak == 2e-4
    with pytest.raises(ConfigError, match="train.lr_peak: expected a number, got '2e-4x'"):
        load_config(overrides=["train.lr_peak=2e-4x"])


def test_variant_consistency():
    with pytest.raises(ConfigError, match="loss.alpha must be 1.0 for variant bc_q"):
        load_config(overrides=["loss.variant=bc_q"])
    cfg = load_config(overrides=["loss.variant=bc_q", "loss.alpha=1.0"])
    assert cfg.loss.variant == "bc_q"


def test_cli_reports_bad_params(capsys):
    from pac.cli import main

    assert main(["config", "--set", "loss.alpha=2"]) == 2
    assert "loss.alpha=2.0 is outside the allowed range" in capsys.readouterr().err
    assert main(["config", "--json", "--flat"]) == 0


def test_a_weak_behaviour_needs_tasks_with_a_weak_controller():
    group = "data.groups=[{name: g, tasks: [%s], quality: 0.3, suboptimal: %s}]"
    cfg = load_config(overrides=[group % ("point_mass.easy, cartpole.balance", "weak")])
    assert cfg.data.groups[0].suboptimal == "weak"
    with pytest.raises(ConfigError, match=r"data.groups.g.suboptimal=weak: task\(s\)"
                       r" reacher.easy have no weak controller; tasks with one: .*point_mass"):
        load_config(overrides=[group % ("point_mass.easy, reacher.easy", "weak")])
    with pytest.raises(ConfigError, match="data.groups.g.suboptimal"):
        load_config(overrides=[group % ("point_mass.easy", "lazy")])
    noisy = "data.groups=[{name: g, tasks: [reacher.easy], action_noise: %s}]"
    assert load_config(overrides=[noisy % "0.2"]).data.groups[0].action_noise == 0.2
    with pytest.raises(ConfigError, match="data.groups.g.action_noise=-0.1 is outside"):
        load_config(overrides=[noisy % "-0.1"])


def _yaml_leaves(node: dict, prefix: str = "") -> dict[str, object]:
    """Every ``section.key`` the YAML file sets, read with PyYAML alone (not pac.config)."""
    out: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_yaml_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_dataclass_defaults_are_the_default_yaml():
    """One source of defaults: a PACConfig built from its dataclass defaults is the config of
    params/default.yaml (`make run`), so a settings change in one place only fails here.
    data.groups is the dataset mixture, an instance list rather than a per-field default."""
    raw = yaml.safe_load((PARAMS / "default.yaml").read_text())
    raw["data"].pop("groups")
    defaults = PACConfig().flat()
    differ = {k: (defaults.get(k, "<no such field>"), v) for k, v in _yaml_leaves(raw).items()
              if defaults.get(k, "<no such field>") != v}
    assert not differ, f"dataclass default != params/default.yaml: {differ}"
    # and the keys the YAML leaves out (Table 4's sizes of the scale) resolve the same way
    resolved, built = load_config().to_dict(), PACConfig().to_dict()
    resolved["data"].pop("groups"), built["data"].pop("groups")
    assert built == resolved


@pytest.mark.parametrize("preset", ["default.yaml", "presets/card15B.yaml",
                                    "presets/alpha_pac.yaml"])
def test_a_resolved_config_reloads_as_itself(preset, tmp_path):
    """What a flow's later steps and `pac` commands read: the `start` step's resolved config as
    a dict (`config_from_dict`) or as a params file (`frozen_settings`), not the YAML again."""
    cfg = load_config(PARAMS / preset, ["loss.variant=filtered_bc", "loss.alpha=1.0",
                                        "loss.beta=0"] if preset == "default.yaml" else [])
    assert config_from_dict(cfg.to_dict()) == cfg
    frozen = frozen_settings(cfg, tmp_path)
    assert frozen.overrides == [] and load_config(frozen.params) == cfg
