"""Evaluation (Tables 1, 7, 13, 18): the episode harness, its statistics and policy serving.

* :mod:`pac.evaluation.evaluator`: ``evaluate`` / ``merge_evaluations`` (workers, references,
  outputs, MLflow);
* :mod:`pac.evaluation.tables`: table rows, the paper-layout markdown, CSV, ``metrics.json``;
* :mod:`pac.evaluation.videos`: captioned 160x160 GIFs: a success and a failure episode a task;
* :mod:`pac.evaluation.stats`: Wilson and standard-error intervals, % of expert;
* :mod:`pac.evaluation.rollout`: one episode, the scripted policies and ``PolicyServer`` (the
  inference checkpoint served at batch 1, what a robot calls);
* :mod:`pac.evaluation.commands`: ``pac eval``.
"""
