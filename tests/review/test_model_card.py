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
