"""Scaling laws for offline RL (§4.1, App. E): return profiles, envelope, power laws (eq. 4).

* :mod:`pac.scaling.laws`: the fits, their outputs and figures, a synthetic ladder;
* :mod:`pac.scaling.commands`: ``pac scaling fit / flops / synth`` (docs/scaling.md).
"""
