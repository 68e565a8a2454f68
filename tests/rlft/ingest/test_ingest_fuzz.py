"""Every defect of the fuzz corpus, delivered beside a good file: `pac ingest` isolates it.

One case per defect (tests/rlft/ingest/ingest_corpus.py: rollout files and LeRobotDataset v3.0
folders). For each, through the `pac ingest` command: the reason code, the bytes kept in
quarantine/ (the item itself, or a copy of a partly bad dataset), the store holding exactly the
good episodes, exit code 1, and the good file of the same batch ingested.
"""

from __future__ import annotations

import json
import os

import pytest
from ingest_corpus import lerobot_cases, rollout_cases, tree_digest

from pac.data import EpisodeStore, store_root
from pac.rlft.ingest import PROCESSED, QUARANTINE

CASES = {**rollout_cases(), **lerobot_cases()}
DEFECTS = sorted(name for name, case in CASES.items() if case.code)
GOOD = "valid_0.npz"  # delivered with every defect; the duplicates repeat its episode


def test_the_corpus_is_large_and_covers_both_formats():
    codes = {CASES[n].code for n in DEFECTS}
    print(f"\n{len(DEFECTS)} defects, {len(codes)} reason codes")
    assert len(DEFECTS) >= 40
    assert sum(n.startswith("lr_") for n in DEFECTS) >= 20  # LeRobot folders
    assert sum(bool(CASES[n].good) for n in DEFECTS) >= 8  # partly bad datasets


@pytest.mark.parametrize("name", DEFECTS)
def test_defect_is_quarantined_and_the_good_item_beside_it_ingested(tmp_path, name):
    from pac.cli import main

    case = CASES[name]
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    landing.mkdir()
    CASES[GOOD].build(landing / GOOD)
    case.build(landing / name)
    before, good_before = tree_digest(landing / name), tree_digest(landing / GOOD)

    code = main(["ingest", str(landing), "--data-root", str(data_root), "--no-track",
                 "--no-dvc"])

    assert code == 1  # something was rejected: a robot-side script sees it
    (report_file,) = (landing / PROCESSED).glob("ingest-*.json")
    report = json.loads(report_file.read_text())
    assert report["rejected"], "the defect must be reported"
    assert {lb.partition("#")[0] for lb in report["rejected"]} == {name}  # only this item
    for label, reason in report["rejected"].items():
        assert reason.startswith(f"{case.code}: "), (label, reason)
    note = (landing / QUARANTINE / f"{name}.reason.txt").read_text()
    for label, reason in report["rejected"].items():
        assert f"{label}: {reason}" in note
    # the evidence, byte for byte: the item itself, or a copy of the partly ingested dataset
    assert tree_digest(landing / QUARANTINE / name) == before
    if case.good:
        assert tree_digest(landing / PROCESSED / name) == before
    eps = EpisodeStore(store_root(data_root), verify=True).episodes
    assert sorted(eps["origin"]) == sorted([GOOD, *case.good])
    assert eps["content_hash"].is_unique
    assert tree_digest(landing / PROCESSED / GOOD) == good_before
    assert sorted(os.listdir(landing)) == [PROCESSED, QUARANTINE]
