"""What a reviewer relies on in MLflow: the handed-over version is the best-evaluated policy, its
card and tags carry its own evaluation, the parent run is a dashboard, and the registered model
loads without this repository.

Three real checkpoints act as three RLFT rounds (constant-action policies: on cartpole.balance
with 60 steps only a = 0, round 1, keeps the pole up in some episodes), each evaluated in
dm_control and registered by the same functions the RLFT loop calls; then the flow's `end`
function (`pac.pipeline.finish`) hands over the champion. The expected champion is read from the
evaluation files (episodes.csv), not from the code under test.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from eval_helpers import tiny_checkpoint

from pac.config import load_config

TASK = "cartpole.balance"
BINS = 5
ROUND_BINS = (0, 2, 4)  # a = -1, 0, +1 in rounds 0, 1, 2


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Closed-form Wilson score interval (percent), written out independently of
    pac.evaluation.stats."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return 100 * (centre - half), 100 * (centre + half)


def _constant_policy(root: Path, base: Path, action_bin: int) -> Path:
    from pac.checkpoint import load_inference_checkpoint, save_inference_checkpoint

    model, cfg, tokenizer = load_inference_checkpoint(base)
    with torch.no_grad():  # the policy head always picks `action_bin`
        model.policy_decoder.head.weight.zero_()
        model.policy_decoder.head.bias.zero_()
        model.policy_decoder.head.bias[action_bin] = 10.0
    return save_inference_checkpoint(model, cfg, root / f"bin{action_bin}", tokenizer)


@pytest.fixture(scope="module")
def handed_over(tmp_path_factory):
    """Three evaluated, registered rounds and the flow's `end` over them."""
    from pac.pipeline import finish
    from pac.rlft.rounds import RoundRow, _update_champion, evaluate_success, table_markdown
    from pac.tracking import Tracker

    tmp = tmp_path_factory.mktemp("review")
    old_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    base = tiny_checkpoint(tmp / "base", f"model.num_action_bins={BINS}")
    policies = [_constant_policy(tmp, base, b) for b in ROUND_BINS]
    cfg = load_config(overrides=[
        f"tracking.uri=sqlite:///{tmp / 'mlruns' / 'mlflow.db'}",
        f"tracking.artifact_dir={tmp / 'mlruns' / 'artifacts'}",
        f"model.num_action_bins={BINS}", f"rlft.tasks=[{TASK}]", f"rlft.out_dir={tmp / 'rlft'}",
        "eval.episodes_per_task=8", "eval.workers=1", "eval.videos_per_task=0",
        "eval.max_steps=60",
    ])
    started = time.time()
    parent = Tracker(cfg, "pac-flow", tags={"pac_role": "flow"})
    rlft_run = Tracker(cfg, "rlft", parent_run_id=parent.run_id)
    rows: list[RoundRow] = []
    for k, policy in enumerate(policies):
        run = Tracker(cfg, f"rlft-round-{k}", parent_run_id=rlft_run.run_id)
        work = tmp / "rlft" / "rounds" / f"round_{k}" / "eval"
        tasks, overall, mean_return, pct = evaluate_success(cfg, policy, work, True, run.run_id)
        row = RoundRow(round=k, episodes_added=0, rollout_episodes=0, collected_success=math.nan,
                       tasks=tasks, overall=overall, policy=str(policy), mean_return=mean_return,
                       run_id=run.run_id, data_version={"episodes_fingerprint": f"fp{k}"},
                       pct_expert=pct, eval_dir=str(work))
        row.champion = _update_champion(cfg, run, policy, None, row, rows,
                                        {"pac.flow_run": parent.run_id})
        rows.append(row)
        run.finish()
    rlft_run.finish()
    pretrained_eval = (tmp / "rlft" / "rounds" / "round_0" / "eval")
    with open(pretrained_eval / "results.csv") as fh:
        eval_rows = [{k: (v if k in ("section", "level", "name") else float(v))
                      for k, v in r.items()} for r in csv.DictReader(fh)]
    history = [{"step": s, "loss/total": 190.0 - s, "loss/policy_improvement": 2.0,
                "loss/bc": 4.0, "loss/q": 5.0 - 0.01 * s, "alpha": 0.75, "beta": 38.0}
               for s in (5, 10, 15)]
    summary = finish(
        cfg, policy_dir=policies[0], mlflow_run_id=parent.run_id, started=started,
        data_version={"episodes_fingerprint": "fp0"}, eval_rows=eval_rows,
        eval_table=(pretrained_eval / "results.md").read_text(),
        rlft_rows=[dataclasses.asdict(r) for r in rows], rlft_table=table_markdown(rows, cfg),
        train_history=history, metaflow_pathspec="PACFlow/1", out_dir=tmp / "out",
        children={"rlft": rlft_run.run_id},
    )
    yield {"cfg": cfg, "tmp": tmp, "policies": policies, "rows": rows, "summary": summary,
           "parent": parent.run_id}
    if old_uri is not None:
        os.environ["MLFLOW_TRACKING_URI"] = old_uri


def _successes_from_files(eval_dir: Path) -> tuple[int, int]:
    with open(eval_dir / "episodes.csv") as fh:
        episodes = list(csv.DictReader(fh))
    return sum(e["success"] == "True" for e in episodes), len(episodes)


def test_champion_is_the_best_evaluation_and_its_card_shows_that_evaluation(handed_over):
    from pac.tracking import download_artifacts, model_alias

    cfg, tmp, summary = handed_over["cfg"], handed_over["tmp"], handed_over["summary"]
    counts = [_successes_from_files(tmp / "rlft" / "rounds" / f"round_{k}" / "eval")
              for k in range(3)]
    best = max(range(3), key=lambda k: (counts[k][0], -k))  # ties: the earlier round
    assert counts[best][0] > max(c[0] for i, c in enumerate(counts) if i != best), counts
    assert best == 1  # neither the pretrained (round 0) nor the last round

    champ = model_alias(cfg, "champion")
    assert summary["registered_version"] == champ["version"] == "2"
    assert summary["champion_round"] == best
    got = download_artifacts(cfg, "models:/pac-policy@champion", tmp / "dl")
    weights = next(got.rglob("model.safetensors")).read_bytes()
    files = [(p / "model.safetensors").read_bytes() for p in handed_over["policies"]]
    assert weights == files[best] and all(weights != f for i, f in enumerate(files) if i != best)

    card = Path(summary["model_card"]).read_text()
    successes, n = counts[best]
    low, high = wilson(successes, n)
    rate = 100 * successes / n
    assert card.startswith("# Model card: pac-policy v2\n")
    assert (f"| success % [Wilson 95%], all evaluated tasks | {rate:.1f} [{low:.1f}, {high:.1f}]"
            f" ({successes}/{n} episodes) |") in card
    own = (tmp / "rlft" / "rounds" / f"round_{best}" / "eval" / "results.md").read_text()
    assert own.strip() in card  # the champion's own evaluation table, verbatim
    pretrained = (tmp / "rlft" / "rounds" / "round_0" / "eval" / "results.md").read_text()
    assert pretrained.strip() not in card
    assert champ["tags"]["rlft_round"] == str(best)


def test_every_round_is_registered_with_its_own_evaluation_and_lineage(handed_over):
    from pac.tracking import client, model_version

    cfg, rows = handed_over["cfg"], handed_over["rows"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    for k, row in enumerate(rows):
        tags = model_version(cfg, str(k + 1))["tags"]
        successes, n = _successes_from_files(Path(row.eval_dir))
        low, high = wilson(successes, n)
        assert tags["rlft_round"] == str(k)
        assert tags["success"].startswith(f"{100 * successes / n:.1f} [{low:.1f}, {high:.1f}]"
                                          f" ({successes}/{n} episodes")
        assert float(tags["success_low"]) == pytest.approx(low, abs=1e-3)
        assert "pct_expert" in tags and tags["data_version"] == f"fp{k}"
        assert tags["pac.git_commit"] == commit and tags["pac.git_dirty"] in ("true", "false")
        assert tags["pac.flow_run"] == handed_over["parent"]
    champion = model_version(cfg, "2")
    assert champion["aliases"] == ["champion"]
    description = client(cfg).get_model_version("pac-policy", "2").description
    assert description == Path(handed_over["summary"]["model_card"]).read_text()


def test_parent_run_is_the_dashboard(handed_over):
    from pac.tracking import client, get_run, list_artifacts, metric_history

    cfg, parent = handed_over["cfg"], handed_over["parent"]
    run = get_run(cfg, parent)
    successes, n = _successes_from_files(Path(handed_over["rows"][1].eval_dir))
    low, high = wilson(successes, n)
    m = run["metrics"]
    assert run["status"] == "FINISHED"
    assert m["success_rate"] == pytest.approx(100 * successes / n)
    # shown to 4 decimals, not as 14-digit binary fractions
    assert (m["success_low"], m["success_high"]) == (round(low, 4), round(high, 4))
    assert {"pct_expert", "pct_expert_low", "pct_expert_high", "pretrained_success_rate"} <= set(m)
    assert m["champion_version"] == 2 and m["champion_round"] == 1
    per_round = [100 * _successes_from_files(Path(r.eval_dir))[0] / n
                 for r in handed_over["rows"]]
    assert [v for _, v in metric_history(cfg, parent, "round_success_rate")] == \
        pytest.approx(per_round)
    note = run["tags"]["mlflow.note.content"]
    assert "pac-policy v2 is the champion" in note and "| RLFT #1 | " in note
    assert run["tags"]["pac.champion_version"] == "2"
    exp = client(cfg).get_experiment(run["experiment_id"])
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    arts = set(list_artifacts(cfg, parent, "figures"))
    assert {"figures/learning_curves.png", "figures/success.png",
            "figures/rlft_rounds.png"} <= arts
    assert "evaluation/results_table.json" in list_artifacts(cfg, parent, "evaluation")
    # child runs named for what they are, metric keys shared across them
    mlc = client(cfg)
    children = mlc.search_runs([run["experiment_id"]], "tags.`pac.stage` = 'evaluate'")
    assert {c.info.run_name for c in children} == {"eval-cartpole"}
    assert all("success_rate" in c.data.metrics and "success_low" in c.data.metrics
               for c in children)
    assert all(not any(TASK in key for key in c.data.metrics) for c in children)


def test_champion_model_loads_and_acts_without_the_repository(handed_over):
    """A fresh interpreter that cannot import this checkout's `pac` loads the registered
    champion and predicts: the model carries its code (code_paths) and its signature."""
    cfg, tmp = handed_over["cfg"], handed_over["tmp"]
    site = [p for p in sys.path if p.endswith("site-packages")]
    script = f"""
import sys
sys.path[:] = [p for p in sys.path if p] + {site!r}  # no repository, no editable install
import importlib.util
assert importlib.util.find_spec("pac") is None, "pac importable before loading the model"
import mlflow
mlflow.set_tracking_uri({cfg.tracking.uri!r})
model = mlflow.pyfunc.load_model("models:/pac-policy@champion")
import pac, json
print(json.dumps({{"pac": pac.__file__, "action": model.predict(
    [{{"instruction": "{TASK}", "proprio": [0.0, 1.0, 0.0, 0.0, 0.0]}}]),
    "inputs": str(model.metadata.get_input_schema())}}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    out = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp, env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    repo = str(Path(__file__).resolve().parents[2])
    assert not got["pac"].startswith(repo) and "/code/pac/" in got["pac"]
    assert got["action"] == [[0.0]]  # the middle of 5 bins on [-1, 1]: a = 0
    assert "instruction" in got["inputs"] and "proprio" in got["inputs"]


def test_weights_are_stored_once_per_checkpoint(handed_over):
    tmp = handed_over["tmp"]
    stored = list((tmp / "mlruns" / "artifacts").rglob("model.safetensors"))
    assert len(stored) == 3  # one per round, no copies in the runs or at registration
    assert len({p.read_bytes() for p in stored}) == 3


def test_params_resolve_group_alpha_beta_and_hold_no_project_paths(tmp_path, monkeypatch):
    from pac.config import REPO_ROOT
    from pac.tracking import Tracker, get_run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(overrides=[
        f"tracking.uri=sqlite:///{tmp_path / 'm.db'}", f"tracking.artifact_dir={tmp_path / 'a'}",
        "loss.variant=alpha_pac", "loss.alpha=0.6", "loss.beta=12",
        "data.groups=[{name: expert, tasks: [point_mass.easy], quality: 1.0,"
        " episodes_per_task: 2}, {name: noisy, tasks: [point_mass.easy], quality: 0.5,"
        " episodes_per_task: 2, alpha: 0.1}]",
    ])
    run = Tracker(cfg, "params")
    run.log_params(cfg.flat() | {"policy": str(REPO_ROOT / "runs" / "x" / "policy"),
                                 "outside": str(tmp_path / "p")})
    run.log_datasets({"data/episodes/expert": "abc123.dir", "episodes_fingerprint": "f00d",
                      "dvc_lock": str(REPO_ROOT / "dvc.lock")})
    info = get_run(cfg, run.run_id)
    p = info["params"]
    assert (p["data.groups.expert.alpha"], p["data.groups.expert.beta"]) == ("0.6", "12.0")
    assert (p["data.groups.noisy.alpha"], p["data.groups.noisy.beta"]) == ("0.1", "12.0")
    assert p["policy"] == "runs/x/policy" and p["outside"] == str(tmp_path / "p")
    assert not any(str(REPO_ROOT) in v for v in p.values())
    assert info["tags"]["pac.git_dirty"] in ("true", "false")
    assert info["tags"]["mlflow.source.git.commit"] == info["tags"]["pac.git_commit"]
    from pac.tracking import client

    inputs = client(cfg).get_run(run.run_id).inputs.dataset_inputs
    got = {d.dataset.name: (d.dataset.digest, d.dataset.source) for d in inputs}
    assert got["data/episodes/expert"] == ("abc123.dir", "data/episodes/expert@dvc.lock")
    assert got["episodes (all groups)"][0] == "f00d"


def test_learning_curve_shares_are_the_weighted_terms():
    from pac.plots import learning_curves, term_shares

    entry = {"loss/policy_improvement": 2.0, "loss/bc": 4.0, "loss/q": 5.0, "alpha": 0.75,
             "beta": 38.0}
    total = 0.25 * 2.0 + 0.75 * 4.0 + 38.0 * 5.0  # 193.5
    assert term_shares(entry) == pytest.approx(
        {"(1-alpha) pi": 50 / total, "alpha BC": 300 / total, "beta Q": 19000 / total})
    fig = learning_curves([{"step": 1, "loss/total": 193.5, **entry}])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["total (eq. 11)", "policy improvement KL", "BC (-log pi)",
                      "Q cross-entropy", "weighted share of total (%)"]


def test_figures_show_counts_and_the_champion(handed_over):
    from pac.plots import rlft_rounds, success_bars

    rows = [dataclasses.asdict(r) for r in handed_over["rows"]]
    fig = rlft_rounds(rows, champion=1)
    star = [line for line in fig.axes[0].lines if line.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xdata()) == [1]
    eval_rows = [{"level": "task", "name": TASK, "success_rate": 50.0, "success_low": 15.0,
                  "success_high": 85.0, "successes": 2, "episodes": 4}]
    texts = [t.get_text() for t in success_bars(eval_rows).axes[0].texts]
    assert texts == ["2/4"]
    figures = handed_over["summary"]["figures"]
    for path in figures.values():
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["run", "--alpha", "-0.5"], "loss.alpha=-0.5 is outside the allowed range [0, 1]"),
    (["run", "--rounds", "-2"], "rlft.rounds=-2 is outside the allowed range [0, inf]"),
    (["run", "--set", "train.steps=0"], "train.steps"),
    (["run", "--alpha", "abc"], "--alpha 'abc' is not a valid float"),
    (["run", "--set=loss.beta=-1"], "loss.beta"),
])
def test_flow_argv_problems_are_one_line(argv, message):
    from pac.pipeline import check_flow_argv

    problem = check_flow_argv(argv)
    assert problem is not None and message in problem and "\n" not in problem


def test_flow_argv_without_problems_passes():
    from pac.pipeline import check_flow_argv, flow_overrides

    assert check_flow_argv(["run", "--alpha", "0.5", "--rounds", "0"]) is None
    assert check_flow_argv(["resume"]) is None
    assert flow_overrides("", alpha=0.0, rounds=0) == ["loss.alpha=0.0", "rlft.rounds=0"]
    assert flow_overrides("a=1; b=2") == ["a=1", "b=2"]  # None: as in the params file


ROOT = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).parent / "dvc")


def test_dvc_lock_matches_the_code_of_the_data_stages():
    """`make run` reruns `dvc repro generate tokenizer`: if dvc.lock lags the code or params
    those stages depend on, the run rewrites dvc.lock and a fresh clone ends up dirty. Outputs
    missing in a fresh clone ("deleted", "not in cache") are expected and not checked here."""
    out = subprocess.run([DVC, "status", "--json", "generate", "tokenizer"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout or "{}")
    stale = {stage: change for stage, changes in status.items() for change in changes
             if isinstance(change, dict) and ({"changed deps", "changed params"} & set(change))}
    assert not stale, f"dvc.lock is stale (run `dvc repro generate tokenizer`): {stale}"


def test_dvc_plots_show_renders_the_figures(handed_over, tmp_path):
    """dvc.yaml's `plots:` (the figures stage's PNGs and the data plots over the tables) as
    `dvc plots show` reads them, in a copy of the project holding one run's outputs."""
    import shutil

    from pac.pipeline import output_figures

    cfg, tmp = handed_over["cfg"], handed_over["tmp"]
    shutil.copy2(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(ROOT / "params", tmp_path / "params")
    from pac.rlft.rounds import _write_tables

    (tmp_path / "runs" / "eval").mkdir(parents=True)
    _write_tables(tmp_path / "runs" / "rlft", handed_over["rows"], cfg, None)  # as rlft() does
    shutil.copy2(tmp / "rlft" / "rounds" / "round_1" / "eval" / "results.csv",
                 tmp_path / "runs" / "eval" / "results.csv")
    drawn = output_figures(cfg, tmp_path / "runs" / "figures", tmp_path / "runs" / "pretrain",
                           tmp_path / "runs" / "eval", tmp_path / "runs" / "rlft")
    assert set(drawn) == {"success", "rlft_rounds"}  # no training run: no learning curves
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    out = subprocess.run([DVC, "plots", "show", "--json"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    shown = json.loads(out.stdout)
    errors = {e["name"] for e in shown.get("errors", [])}
    assert errors == {"runs/figures/learning_curves.png"}, shown.get("errors")
    data = shown["data"]
    assert data["runs/figures/success.png"] and data["runs/figures/rlft_rounds.png"]
    assert data["success per task (Wilson 95%)"] and data["RLFT rounds, success %"]


def test_line_progress_prints_plain_lines_not_a_redrawn_bar():
    import io

    from pac.progress import LineProgress

    stream = io.StringIO()
    bar = LineProgress(4, desc="pac train", unit="update", every_s=3600, stream=stream)
    for _ in range(3):
        bar.update(1)
    bar.set_postfix(loss="1.5000")
    bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 2  # the start and the end; nothing in between within every_s
    assert lines[0] == "pac train: 0/4 update (0%)"
    assert lines[1].startswith("pac train: 4/4 update (100%), ") and lines[1].endswith(
        "| loss=1.5000")


def test_a_run_lists_its_logged_model_among_its_artifacts(handed_over):
    from pac.tracking import list_artifacts

    round_run = handed_over["rows"][0].run_id
    assert "policy_model" in list_artifacts(handed_over["cfg"], round_run)


def test_videos_are_captioned_below_the_unchanged_frames():
    import numpy as np

    from pac.evaluation.videos import label_frames

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (4, 160, 160, 3), dtype=np.uint8)
    out = label_frames(frames, "cartpole.balance #0\nreturn 57.2  success")
    assert out.shape[1] > 160 and out.shape[2] == 160 and out.shape[0] == 4
    np.testing.assert_array_equal(out[:, :160], frames)  # native size: not rescaled
    caption = out[:, 160:]
    assert caption.max() > 200 and (caption == caption[0]).all()  # drawn text, every frame


def test_the_headline_is_one_number_everywhere_and_the_version_is_linked_to_the_parent(
        handed_over):
    """The champion's result over all its evaluated episodes (read from episodes.csv) is the
    same in the parent run's metrics, tags and description, the version's tags and the card;
    the version is listed under the parent run; metrics carry at most 4 decimals."""
    from pac.tracking import client, get_run, model_version

    cfg, parent = handed_over["cfg"], handed_over["parent"]
    successes, n = _successes_from_files(Path(handed_over["rows"][1].eval_dir))
    low, high = wilson(successes, n)
    text = f"{100 * successes / n:.1f} [{low:.1f}, {high:.1f}] ({successes}/{n} episodes)"
    run = get_run(cfg, parent)
    assert run["metrics"]["episodes"] == n
    assert run["tags"]["pac.success"] == text and run["tags"]["pac.eval_episodes"] == str(n)
    assert f"| success % [Wilson 95%], all evaluated tasks | {text} |" in \
        run["tags"]["mlflow.note.content"]
    version = model_version(cfg, "2")
    assert version["tags"]["success"].startswith(text[:-1])  # "(4/8 episodes, Wilson 95%)"
    assert text in Path(handed_over["summary"]["model_card"]).read_text()
    assert all(round(v, 4) == v for v in run["metrics"].values())
    linked = client(cfg).search_model_versions(f"run_id = '{parent}'")
    assert {str(v.version) for v in linked} == {"1", "2", "3"}  # every version of the flow run
    assert "pac.champion_rule" in version["tags"] and "replaces v1" in \
        version["tags"]["pac.champion_decision"]
