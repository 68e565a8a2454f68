"""The Perceiver-Actor-Critic model (§3.3, App. B, Algorithm 1): tensors in, logits out."""
