"""PAC: the Perceiver-Actor-Critic pipeline (Springenberg et al., ICML 2024)."""

__version__ = "0.1.0"
