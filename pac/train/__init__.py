"""Training: DeepSpeed engine, Table 12 schedule, target network, checkpoints, plan (App. C.5).

``from pac.train import train, TrainResult`` (imported lazily: `pac --help` stays fast).
"""

from __future__ import annotations

__all__ = ["TrainResult", "train"]


def __getattr__(name: str):
    if name in __all__:
        from pac.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'pac.train' has no attribute {name!r}")
