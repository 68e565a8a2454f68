"""RL fine-tuning (§4.3, Tables 2-3): self-improvement rounds, the robot seam, ingestion.

* :mod:`pac.rlft.rounds`: ``rlft`` (collect -> ingest -> fine-tune -> evaluate per round), the
  round table, the registry champion;
* :mod:`pac.rlft.robot`: ``RobotClient`` (what a robot implements), ``SimRobot`` (its dm_control
  stand-in) and ``collect`` (one round's rollouts into a landing folder);
* :mod:`pac.rlft.ingest`: validation, quarantine and commit of robot rollouts to the store;
* :mod:`pac.rlft.commands`: ``pac rollout``, ``pac ingest``, ``pac rlft``.
"""
