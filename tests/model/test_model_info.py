"""`pac model-info`: parameter counts of every scale against Table 4 (meta device, no memory)."""

import json

import pytest

from pac.cli import main
from pac.config import SCALES
from pac.model.info import model_info, scale_config

PAPER_SCALES = [s for s in SCALES if SCALES[s]["paper_params"]]


@pytest.mark.parametrize("scale", PAPER_SCALES)
def test_counts_within_5_percent_of_table4(scale):
    info = model_info(scale_config(scale))
    print(f"{scale}: {info['params']:,} vs {info['paper_params']:,} ({info['rel_diff']:+.1%})")
    assert abs(info["rel_diff"]) <= 0.05
    assert info["input_tokens"] == 2634  # Table 5: N = 223*8 + 8*100 + 50


def test_tiny_is_about_150k():
    """The laptop scale (D_Z 64, 2 blocks, 16 latents, W 1; the three default tasks' inputs)."""
    info = model_info(scale_config("tiny"))
    print(f"tiny: {info['params']:,}")
    assert 0.12e6 <= info["params"] <= 0.18e6


def test_cli_json_table_and_params_file(capsys):
    assert main(["model-info", "--scale", "XXS", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scale"] == "XXS" and out["params"] == model_info(scale_config("XXS"))["params"]
    assert sum(out["components"].values()) == out["params"]
    assert main(["model-info", "--all"]) == 0
    table = capsys.readouterr().out
    assert all(s in table for s in SCALES) and "2634" in table
    assert main(["model-info", "--json", "--set", "model.d_z=64"]) == 0
    assert json.loads(capsys.readouterr().out)["d_z"] == 64
    assert main(["model-info", "--scale", "XXL"]) == 2
    assert "unknown scale 'XXL'" in capsys.readouterr().err
