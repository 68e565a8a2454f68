"""The model card's data-mixture table names what each generated group does when not the expert,
and the action noise its behaviour carried; its batch row counts time steps and transitions."""

from pac.config import load_config
from pac.review.model_card import ModelCardFacts, render_model_card


def test_the_mixture_table_names_each_groups_behaviour():
    cfg = load_config(overrides=[
        "data.groups=[{name: expert, tasks: [point_mass.easy], quality: 1.0},"
        " {name: explorer, tasks: [reacher.easy], quality: 1.0, action_noise: 0.2},"
        " {name: timid, tasks: [point_mass.easy, cartpole.balance], quality: 0.3,"
        " suboptimal: weak, weight: 2.0}, {name: sticky, tasks: [cartpole.balance],"
        " quality: 0.42}, {name: robot, tasks: [point_mass.easy], quality: 0.5, source: real}]",
    ])
    card = render_model_card(cfg, ModelCardFacts(name="pac-policy v1", params=1, wall_clock_s=1))
    lines = card.splitlines()
    head = lines.index("| group | tasks | quality | when not the expert | action noise | lambda"
                       " | alpha | beta |")
    rows = []
    for line in lines[head + 2:]:  # the table runs until the first line that is not a row
        if not line.startswith("| "):
            break
        rows.append(line)
    assert rows == [
        "| expert | point_mass.easy | 1.0 | - | 0 | 1.0 | 0.75 | 38.0 |",
        "| explorer | reacher.easy | 1.0 | - | 0.2 | 1.0 | 0.75 | 38.0 |",
        "| timid | point_mass.easy, cartpole.balance | 0.3 | weak | 0.1 | 2.0 | 0.75 | 38.0 |",
        "| sticky | cartpole.balance | 0.42 | random | 0.1 | 1.0 | 0.75 | 38.0 |",
        "| robot | point_mass.easy | 0.5 | - | - | 1.0 | 0.75 | 38.0 |",
    ]


def test_the_batch_row_counts_time_steps_and_the_transitions_the_loss_sees():
    # 80 windows of 2 steps: 160 time steps, one transition (s_0, a_0, r_0, s_1) per window.
    cfg = load_config(overrides=["train.global_batch=80", "data.trajectory_length=2"])
    card = render_model_card(cfg, ModelCardFacts(name="pac-policy v1", params=1, wall_clock_s=1))
    assert ("| batch | 80 trajectories x 2 steps = 160 time steps"
            " (80 transitions at loss positions 0..T-2) |") in card.splitlines()


def test_the_card_says_what_was_used_how_to_load_it_and_its_limits():
    """Precision as resolved (not "auto"), the pretraining run's duration apart from the flow's
    wall clock, a load snippet with each task's input size (the flattened observation and
    action sizes, read here from dm_control itself), the weakest task."""
    import numpy as np
    from dm_control import suite

    cfg = load_config(overrides=["train.precision=auto"])
    facts = ModelCardFacts(
        name="pac-policy v1", params=1, wall_clock_s=400, train_seconds=90, precision="bf16",
        task_success={"cartpole.balance": {"rate": 100.0, "low": 72.2, "high": 100.0,
                                           "episodes": 10},
                      "reacher.easy": {"rate": 30.0, "low": 10.8, "high": 60.3, "episodes": 10}})
    lines = render_model_card(cfg, facts).splitlines()
    assert "| DeepSpeed | ZeRO stage 0, bf16 (train.precision: auto) |" in lines
    assert "| training duration (pretraining run, wall clock) | 90 s |" in lines
    assert "| flow run (data, training, evaluation, RLFT; wall clock) | 6.7 min |" in lines
    card = "\n".join(lines)
    assert 'mlflow.pyfunc.load_model("models:/pac-policy@champion")' in card
    for task in ("point_mass.easy", "cartpole.balance", "reacher.easy"):
        domain, name = task.split(".")
        env = suite.load(domain, name)
        size = sum(int(np.prod(s.shape)) for s in env.observation_spec().values())
        actions = int(np.prod(env.action_spec().shape))
        assert f"| {task} | {size} | {actions} |" in lines, task
    assert "- Weakest task: reacher.easy, 30.0 % success [10.8, 60.3] over 10 episodes." in lines
    assert any(line.startswith("- Trained and evaluated in simulation only") for line in lines)
