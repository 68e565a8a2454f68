"""Deliveries a lab really produces: one test per case that broke the ingest, through `pac ingest`.

Each test names the delivery, then checks what must hold against values written here by hand:
the store holds exactly the good episodes (byte-equal arrays), the odd item is quarantined with
one printable reason line, or a wrong LANDING changes nothing (a digest of the whole tree).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ingest_corpus import make_episode, tree_digest, write_lerobot

from pac.data import EpisodeStore, store_root
from pac.rlft.ingest import PROCESSED, QUARANTINE, ingest, write_rollout
from pac.rlft.ingest.lerobot import MAX_DECODED_BYTES

REPO = Path(__file__).resolve().parents[3]


def _pac_ingest(*args: str) -> int:
    from pac.cli import main

    return main(["ingest", *args, "--no-track", "--no-dvc"])


def _arrays(data_root: Path, origin: str, name: str) -> np.ndarray:
    """The stored `name` array (proprio, actions, discounts, images) of the episode `origin`."""
    store = EpisodeStore(store_root(data_root), verify=True)
    row = store.episodes[store.episodes["origin"] == origin].iloc[0]
    shard = next(s for s in store.shards if s.key == row["shard"])
    return np.asarray(getattr(shard, name)[row["start"]: row["start"] + row["length"]])


def _origins(data_root: Path) -> list[str]:
    return sorted(EpisodeStore(store_root(data_root), verify=True).episodes["origin"])


# --- 1. a 1-action task --------------------------------------------------------------------------


@pytest.mark.parametrize("vectors", ["scalar", "fixed"])
def test_one_action_task_as_lerobot_writes_it_is_ingested(tmp_path, vectors):
    """cartpole (N^A = 1): lerobot 0.4.4 writes the shape-[1] action as a scalar float column;
    a fixed-size list of one element is the other layout. Both are the same actions."""
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    episodes = [make_episode("cartpole.swingup", steps=6, seed=i) for i in range(3)]
    write_lerobot(landing / "cart", episodes, per_file=3, vectors=vectors)
    kind = pq.read_schema(landing / "cart" / "data" / "chunk-000" / "file-000.parquet")
    want = {"scalar": "float", "fixed": "fixed_size_list<element: float>[1]"}[vectors]
    assert str(kind.field("action").type) == want

    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 0
    assert _origins(data_root) == [f"cart#episode_{i}" for i in range(3)]
    for i, ep in enumerate(episodes):
        np.testing.assert_array_equal(_arrays(data_root, f"cart#episode_{i}", "actions"),
                                      ep.actions)  # [T, 1], the values written


# --- 2. one task_index for two tasks -------------------------------------------------------------


def test_one_task_index_given_to_two_tasks_is_refused(tmp_path, capsys):
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    root = write_lerobot(landing / "arm", [make_episode("reacher.easy", steps=6, seed=i)
                                           for i in range(2)])
    pd.DataFrame({"task_index": [0, 0]}, index=pd.Index(["reacher.easy", "reacher.hard"],
                                                         name="task")).to_parquet(
        root / "meta" / "tasks.parquet")
    before = tree_digest(root)

    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 1
    err = capsys.readouterr().err
    assert err == ("rejected arm: lerobot-meta: meta/tasks.parquet gives task_index 0 to two"
                   " tasks, 'reacher.easy' and 'reacher.hard': which of them an episode shows is"
                   " unknown\n")
    assert not EpisodeStore(store_root(data_root)).shards  # under neither task
    assert tree_digest(landing / QUARANTINE / "arm") == before


# --- 3. some rollouts with camera images ---------------------------------------------------------


def test_a_batch_where_only_some_rollouts_carry_images_is_stored(tmp_path):
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    plain = [make_episode(steps=5, seed=i) for i in range(2)]
    cams = {}
    for n in (1, 2):
        ep = make_episode(steps=5, seed=10 + n)
        ep.images = np.random.default_rng(n).integers(0, 256, (5, n, 80, 80, 3), dtype=np.uint8)
        cams[n] = ep
    for i, ep in enumerate(plain):
        write_rollout(landing / f"plain{i}.npz", ep)
    for n, ep in cams.items():
        write_rollout(landing / f"cams{n}.npz", ep)

    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 0
    assert _origins(data_root) == ["cams1.npz", "cams2.npz", "plain0.npz", "plain1.npz"]
    for n, ep in cams.items():
        np.testing.assert_array_equal(_arrays(data_root, f"cams{n}.npz", "images"), ep.images)
    manifests = [json.loads((p / "manifest.json").read_text()) for p in
                 (store_root(data_root) / "rollouts").iterdir() if not p.name.startswith(".")]
    assert sorted(m["cameras"] for m in manifests) == [0, 1, 2]  # a shard per kind
    assert sorted(p.name for p in (landing / PROCESSED).glob("*.npz")) == [
        "cams1.npz", "cams2.npz", "plain0.npz", "plain1.npz"]


# --- 4. a non-UTF-8 name -------------------------------------------------------------------------


def test_a_non_utf8_file_or_folder_name_is_quarantined_and_the_rest_stored(tmp_path, capsys):
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    write_rollout(landing / "good.npz", make_episode(seed=1))
    bad_file = os.fsdecode(b"ep\xff.npz")
    bad_folder = os.fsdecode(b"arm\xfe")
    write_rollout(landing / bad_file, make_episode(seed=2))
    write_lerobot(landing / "arm", [make_episode(steps=6, seed=3)])
    os.rename(landing / "arm", landing / bad_folder)
    data = write_lerobot(landing / "cut", [make_episode(steps=6, seed=4)]) / "data" / "chunk-000"
    (data / "file-000.parquet").unlink()  # a cut data file, named with a bad byte and a newline
    (data / os.fsdecode(b"file-\xfd\n.parquet")).write_bytes(b"PAR1 cut")

    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 1
    assert _origins(data_root) == ["good.npz"]
    err = capsys.readouterr().err.splitlines()
    assert sorted(line.split(": ")[0] for line in err) == [
        "rejected arm\\xfe", "rejected cut", "rejected ep\\xff.npz"]
    assert (landing / QUARANTINE / "cut.reason.txt").read_text() == (
        "cut: lerobot-data: data/chunk-000/file-\\xfd\\n.parquet: unreadable parquet:"
        " ArrowInvalid: Parquet magic bytes not found in footer. Either the file is corrupted or"
        " this is not a parquet file.\n")
    for name, shown in ((bad_file, "ep\\xff.npz"), (bad_folder, "arm\\xfe")):
        assert os.path.lexists(landing / QUARANTINE / name)  # the item, under its own name
        note = (landing / QUARANTINE / f"{name}.reason.txt").read_bytes().decode("utf-8")
        assert note.startswith(f"{shown}: encoding: the name {shown} is not valid UTF-8")
        assert note.count("\n") == 1
    assert (landing / PROCESSED / "good.npz").is_file()


# --- 5. a long legal name ------------------------------------------------------------------------


def test_long_names_are_moved_under_short_names_without_traceback_or_hidden_copies(tmp_path):
    """A 236-byte dataset with one bad episode (kept in quarantine/ as a copy with a reason
    file) and a 250-byte junk file: their derived names would pass NAME_MAX 255."""
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    ds_name, junk_name = "d" * 236, "j" * 246 + ".npz"
    eps = [make_episode(steps=6, seed=i) for i in range(2)]
    eps[1].proprio[2, 0] = np.nan
    write_lerobot(landing / ds_name, eps)
    (landing / junk_name).write_bytes(b"not a rollout")
    write_rollout(landing / "good.npz", make_episode(seed=9))

    for run in range(2):  # no exception; a rerun adds nothing and leaves nothing behind
        assert _pac_ingest(str(landing), "--data-root", str(data_root)) == (1 if run == 0 else 0)
    assert _origins(data_root) == [f"{ds_name}#episode_0", "good.npz"]
    quarantined = sorted(os.listdir(landing / QUARANTINE))
    assert not [n for n in quarantined if n.startswith(".")]  # no hidden half copies
    assert len(quarantined) == 4  # the dataset's copy, the junk, and their reason files
    notes = [(landing / QUARANTINE / n).read_text() for n in quarantined if n.endswith(".txt")]
    assert sorted(n.split(": ")[0] for n in notes) == [ds_name + "#episode_1", junk_name]
    copy = next(n for n in quarantined if n.startswith("d") and not n.endswith(".txt"))
    assert tree_digest(landing / QUARANTINE / copy) == tree_digest(
        landing / PROCESSED / next(n for n in os.listdir(landing / PROCESSED)
                                   if n.startswith("d")))
    assert sorted(os.listdir(landing)) == [PROCESSED, QUARANTINE]


# --- 6. a file added while the ingest runs -------------------------------------------------------


def test_a_file_added_to_a_dataset_while_it_is_read_is_not_moved_unread(tmp_path, monkeypatch):
    import pac.rlft.ingest.landing as landing_module

    landing, data_root, scratch = tmp_path / "landing", tmp_path / "data", tmp_path / "scratch"
    eps = [make_episode(steps=6, seed=i) for i in range(3)]
    write_lerobot(landing / "arm", eps[:2], per_file=2)
    write_lerobot(scratch, eps, per_file=2)  # its file-001 holds episode 2
    parse = landing_module.parse_item

    def robot_appends(path: Path):
        out = parse(path)
        shutil.copy(scratch / "data" / "chunk-000" / "file-001.parquet",
                    landing / "arm" / "data" / "chunk-000" / "file-001.parquet")
        return out

    monkeypatch.setattr(landing_module, "parse_item", robot_appends)
    first = ingest(landing, data_root)
    monkeypatch.setattr(landing_module, "parse_item", parse)
    assert (landing / "arm").is_dir() and not (landing / PROCESSED / "arm").exists()
    assert first.accepted == ["arm#episode_0", "arm#episode_1"]
    assert list(first.left) == ["arm"] and first.exit_code == 1

    second = ingest(landing, data_root)  # the next ingest reads the new file
    assert second.accepted == ["arm#episode_2"] and second.exit_code == 0
    assert _origins(data_root) == [f"arm#episode_{i}" for i in range(3)]
    assert (landing / PROCESSED / "arm").is_dir()


# --- 7. a parquet that decodes to gigabytes ------------------------------------------------------

_MEASURE = """
import json, resource, sys
from pac.rlft.ingest import ingest
report = ingest(sys.argv[1], sys.argv[2])
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_mb": peak_mb, "accepted": report.accepted, "rejected": report.rejected}))
"""


def test_a_small_parquet_decoding_to_gigabytes_is_refused_in_bounded_memory(tmp_path):
    """`bomb`: 34 row groups of 4 Mi int64 zeros (1 MB on disk, 1.06 GiB decoded, over the
    limit); `text_bomb`: one 2 KiB text a million times (200 KB on disk, 2 GiB as plain
    strings), under the limit because text stays dictionary-encoded: its missing columns are
    found without materialising it."""
    landing = tmp_path / "landing"
    write_rollout(landing / "good.npz", make_episode(seed=2))
    bomb = write_lerobot(landing / "bomb", [make_episode(steps=6, seed=1)])
    rows = 1 << 22
    table = pa.table({"index": pa.array(np.zeros(rows, np.int64))})
    data = bomb / "data" / "chunk-000" / "file-000.parquet"
    with pq.ParquetWriter(data, table.schema, compression="zstd") as writer:
        for _ in range(34):
            writer.write_table(table, row_group_size=rows)
    text = write_lerobot(landing / "text_bomb", [make_episode(steps=6, seed=1)])
    repeated = pa.DictionaryArray.from_arrays(pa.array(np.zeros(1 << 20, np.int32)),
                                              pa.array(["x" * 2048]))
    pq.write_table(pa.table({"index": repeated}), text / "data" / "chunk-000" / "file-000.parquet",
                   compression="zstd", store_schema=False)  # read back as plain strings
    assert sum(p.stat().st_size for p in landing.rglob("*.parquet")) < 2 << 20

    cmd = [sys.executable, "-c", _MEASURE, str(landing), str(tmp_path / "data")]
    out = subprocess.run(["sh", "-c", '"$@"; status=$?; exit $status', "sh", *cmd],
                         cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\npeak RSS {result['peak_mb']:.0f} MB; {result['rejected']}")
    assert result["peak_mb"] < 400
    assert result["accepted"] == ["good.npz"]
    limit = f"more than {MAX_DECODED_BYTES >> 20} MiB (the limit of one dataset"
    assert result["rejected"]["bomb"].startswith(f"too-large: its parquet files decode to {limit}")
    assert result["rejected"]["text_bomb"].startswith("missing: data parquet files lack column")


# --- 8. a wrong LANDING argument -----------------------------------------------------------------


def test_the_parent_of_a_landing_folder_or_a_folder_inside_a_dataset_changes_nothing(
        tmp_path, capsys):
    site, data_root = tmp_path / "site", tmp_path / "data"
    ingested, fresh = site / "landing", site / "landing2"
    write_rollout(ingested / "ep0.npz", make_episode(seed=1))
    assert ingest(ingested, data_root).accepted == ["ep0.npz"]  # it has processed/ now
    write_rollout(ingested / "ep1.npz", make_episode(seed=2))
    write_rollout(fresh / "ep2.npz", make_episode(seed=3))  # never ingested: only .npz files
    dataset = write_lerobot(ingested / "arm", [make_episode(steps=6, seed=4)])
    before = tree_digest(tmp_path)

    for wrong, why in [(site, "holds landing, which has a processed/ folder"),
                       (dataset / "data", f"is inside the LeRobotDataset {dataset}"),
                       (dataset / "data" / "chunk-000", "is inside the LeRobotDataset"),
                       (dataset / "meta", "is inside the LeRobotDataset")]:
        assert _pac_ingest(str(wrong), "--data-root", str(data_root)) == 2, wrong
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err, err
        assert tree_digest(tmp_path) == before, f"pac ingest {wrong} changed the disk"
    shutil.rmtree(ingested)
    before = tree_digest(tmp_path)
    assert _pac_ingest(str(site), "--data-root", str(data_root)) == 2
    assert "holds landing2, which holds .npz rollout files" in capsys.readouterr().err
    assert tree_digest(tmp_path) == before


# --- 9. a read-only landing folder ---------------------------------------------------------------


def test_a_read_only_landing_gives_one_line_and_loses_nothing(tmp_path):
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    write_rollout(landing / "ep0.npz", make_episode(seed=1))
    (landing / "junk.npz").write_bytes(b"not a rollout")
    cmd = [sys.executable, "-m", "pac.cli", "ingest", str(landing), "--data-root",
           str(data_root), "--no-track", "--no-dvc"]
    if os.geteuid() == 0:  # root writes through permission bits: a read-only mount instead
        remount = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
        cmd = ["unshare", "-m", "sh", "-c", remount, "sh", str(landing), *cmd]
        probe = subprocess.run([*cmd[:7], "true"], capture_output=True)
        if probe.returncode:
            pytest.skip("running as root without the right to make a read-only mount")
    else:
        os.chmod(landing, 0o555)
    before = tree_digest(tmp_path)
    try:
        result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(landing, 0o755)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"pac ingest: {landing} is not writable by this user: nothing was"
                             " read, moved or stored; make it writable and rerun\n")
    assert tree_digest(tmp_path) == before  # no store either


# --- 10. a dataset folder named processed --------------------------------------------------------


def test_a_dataset_named_processed_is_not_skipped_silently(tmp_path, capsys):
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    write_lerobot(landing / PROCESSED, [make_episode(steps=6, seed=1)])
    write_rollout(landing / "ep0.npz", make_episode(seed=2))
    before = tree_digest(tmp_path)
    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 2
    err = capsys.readouterr().err
    assert err == (f"pac ingest: {landing / PROCESSED} is a LeRobotDataset, but pac ingest keeps"
                   f" its processed/ folder under that name: rename the dataset (e.g. mv"
                   f" {landing / PROCESSED} {landing / PROCESSED}_dataset) and rerun\n")
    assert tree_digest(tmp_path) == before
    os.rename(landing / PROCESSED, landing / "processed_dataset")  # as the line says
    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 0
    assert _origins(data_root) == ["ep0.npz", "processed_dataset#episode_0"]


# --- 11. a null observation.state row ------------------------------------------------------------


def test_a_null_state_row_rejects_only_its_episode(tmp_path):
    """Episodes 1 and 3 each have one whole observation.state row null (a plain list column:
    pyarrow cannot read a null fixed-size list back); episodes 0 and 2 are stored unchanged."""
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    eps = [make_episode(steps=6, seed=i) for i in range(4)]

    def null_row(e: int, df: pd.DataFrame) -> pd.DataFrame:
        if e in (1, 3):
            df["observation.state"] = df["observation.state"].astype(object)
            df.at[e, "observation.state"] = None
        return df

    write_lerobot(landing / "arm", eps, per_file=2, frames_edit=null_row, vectors="plain")
    report = ingest(landing, data_root)
    assert report.accepted == ["arm#episode_0", "arm#episode_2"]
    assert report.rejected == {
        f"arm#episode_{e}": f"non-finite: episode {e}: proprio has 4 NaN/inf value(s), first at"
        f" row {e}, column 0" for e in (1, 3)}
    for e in (0, 2):
        np.testing.assert_array_equal(_arrays(data_root, f"arm#episode_{e}", "proprio"),
                                      eps[e].proprio)


# --- 12. a newline in a file name ----------------------------------------------------------------


def test_a_newline_in_a_name_cannot_split_a_reason_or_forge_a_line(tmp_path, capsys):
    landing, data_root = tmp_path / "landing", tmp_path / "data"
    forged = "x.npz\nrejected good.npz: forged"
    (landing).mkdir()
    (landing / forged).write_bytes(b"not a rollout")
    write_rollout(landing / "ok\nname.npz", make_episode(seed=1))

    assert _pac_ingest(str(landing), "--data-root", str(data_root)) == 1
    err = capsys.readouterr().err
    shown = "x.npz\\nrejected good.npz: forged"
    assert err == (f"rejected {shown}: not-a-rollout: not a rollout archive: a 13-byte file that"
                   " does not start with a zip header\n")
    note = (landing / QUARANTINE / f"{forged}.reason.txt").read_text()
    assert note == err.removeprefix("rejected ")
    assert _origins(data_root) == ["ok\\nname.npz"]
    (report,) = (landing / PROCESSED).glob("ingest-*.json")
    assert list(json.loads(report.read_text())["rejected"]) == [shown]


# --- episode ends: terminal or time limit, from the data -----------------------------------------

#: (end columns of one 3-frame episode, its discounts), written by hand from the rule in
#: docs/rollout_format.md: terminated > truncated > success > a sparse final reward > time limit
END_CASES = {
    "done alone, dense rewards: time limit": (dict(done=[0, 0, 1], rewards=[.1, .2, .3]),
                                              [1, 1, 1]),
    "done alone, the final reward the only one": (dict(done=[0, 0, 1], rewards=[0, 0, 1]),
                                                  [1, 1, 0]),
    "done alone, a final penalty the only one": (dict(done=[0, 0, 1], rewards=[0, 0, -1]),
                                                 [1, 1, 0]),
    "done alone, no reward at all": (dict(done=[0, 0, 1], rewards=[0, 0, 0]), [1, 1, 1]),
    "done alone, rewards before the end too": (dict(done=[0, 0, 1], rewards=[0, 1, 1]),
                                               [1, 1, 1]),
    "done alone, no rewards given": (dict(done=[0, 0, 1]), [1, 1, 1]),
    "terminated": (dict(done=[0, 0, 1], terminated=[0, 0, 1], rewards=[.1, .2, .3]), [1, 1, 0]),
    "terminated 0 over a sparse reward": (dict(done=[0, 0, 1], terminated=[0, 0, 0],
                                               rewards=[0, 0, 1]), [1, 1, 1]),
    "truncated over a sparse reward": (dict(done=[0, 0, 1], truncated=[0, 0, 1],
                                            rewards=[0, 0, 1]), [1, 1, 1]),
    "done and not truncated": (dict(done=[0, 0, 1], truncated=[0, 0, 0]), [1, 1, 0]),
    "success on the done frame": (dict(done=[0, 0, 1], success=[0, 0, 1], rewards=[.1, .2, .3]),
                                  [1, 1, 0]),
    "no success over a sparse reward": (dict(done=[0, 0, 1], success=[0, 0, 0],
                                             rewards=[0, 0, 1]), [1, 1, 1]),
    "success before the done frame only": (dict(done=[0, 0, 1], success=[0, 1, 0]), [1, 1, 1]),
    "no done column: the last frame ends it": (dict(truncated=[0, 0, 0]), [1, 1, 0]),
    "no end column at all": ({}, None),
}


@pytest.mark.parametrize("case", list(END_CASES))
def test_discounts_from_the_end_columns(case):
    from pac.rlft.ingest import discounts_from_done

    columns, want = END_CASES[case]
    got = discounts_from_done(**{k: np.array(v) for k, v in columns.items()})
    assert (got if got is None else got.tolist()) == want


def test_a_sparse_final_reward_is_stored_as_a_terminal_step(tmp_path):
    """`sparse`: next.done only; episode 0 succeeds (reward 1 on its final frame only), 1 fails
    (all 0), 2 has dense rewards. `flags`: next.truncated and next.success columns."""
    from ingest_corpus import _features

    landing, data_root = tmp_path / "landing", tmp_path / "data"
    def episodes(seed: int) -> list:
        eps = [make_episode(steps=5, seed=seed + i) for i in range(3)]
        eps[0].rewards[:] = [0, 0, 0, 0, 1]
        eps[1].rewards[:] = 0
        return eps

    write_lerobot(landing / "sparse", episodes(0))
    truncated, success = {0: False, 1: True, 2: False}, {0: True, 1: False, 2: False}

    def flags(e: int, df: pd.DataFrame) -> pd.DataFrame:
        last = np.arange(len(df)) == len(df) - 1
        return df.assign(**{"next.truncated": last & truncated[e],
                            "next.success": last & success[e]})

    write_lerobot(landing / "flags", episodes(10), frames_edit=flags)
    _features(landing / "flags", **{f"next__{k}": {"dtype": "bool", "shape": [1], "names": None}
                                     for k in ("truncated", "success")})
    assert ingest(landing, data_root).exit_code == 0
    want = {"sparse#episode_0": [1, 1, 1, 1, 0], "sparse#episode_1": [1] * 5,
            "sparse#episode_2": [1] * 5,
            "flags#episode_0": [1, 1, 1, 1, 0],  # not truncated: terminal
            "flags#episode_1": [1] * 5,  # truncated
            "flags#episode_2": [1, 1, 1, 1, 0]}  # not truncated: terminal (truncated decides)
    for origin, discounts in want.items():
        assert _arrays(data_root, origin, "discounts").tolist() == discounts, origin
