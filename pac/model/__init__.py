"""The Perceiver-Actor-Critic model (§3.3, App. B, Algorithm 1): tensors in, logits out."""

__all__ = ["PerceiverActorCritic"]


def __getattr__(name: str):
    # torch loads on first use, so `pac --help` and the data commands start fast
    if name == "PerceiverActorCritic":
        from pac.model.pac_model import PerceiverActorCritic

        return PerceiverActorCritic
    raise AttributeError(f"module 'pac.model' has no attribute {name!r}")
