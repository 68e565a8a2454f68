"""The Perceiver-Actor-Critic (§3.3, App. B, Algorithm 1): padded multi-modal input -> logits.

Algorithm 1, top to bottom::

    e_I = phi^P(s^P) + phi^V(s^V) + phi^V(tau^V) + phi^L(tau^L)   (concatenated tokens, D_I)
    z_0 = X-ATTN(z, e_I);  z_m = S-ATTN(z_{m-1}), m = 1..M        (N_Z latents of width D_Z)
    y_pi = L_pi(X-ATTN(q_pi, z_M))                                (N^A x N_B policy logits)
    y_Q  = L_Q(X-ATTN(phi^A(a), z_M))                             (N_Q Q-value logits)

z_M does not depend on the action, so Q for K candidate actions is one encoder pass plus one
decoder pass with K queries (cross-attention treats queries independently).

Parameter counts (Table 4). The input cross-attention and the M latent blocks carry an MLP of
widening W; the Q decoder's cross-attention block an MLP of widening ``model.q_decoder_widening``
(default 1, see :class:`QDecoder`), the policy and V decoders one of ``model.decoder_widening``
(default 0: none), which keeps every scale within 5 % of Table 4 with Table 5's input format
(tests/model/test_model_info.py). ``pac model-info --all`` prints the counts per component.
"""

from __future__ import annotations

import torch
from torch import nn

from pac.batch import Observation
from pac.config import ModelConfig
from pac.model.attention import CrossAttentionBlock, SelfAttentionBlock
from pac.model.encoders import (
    ActionEncoder,
    ImageEncoder,
    ProprioEncoder,
    TextEncoder,
    _embedding,
)


class PerceiverEncoder(nn.Module):
    """z_0 = X-ATTN(z, e_I), then M S-ATTN blocks -> z_M [B, N_Z, D_Z] (App. B.3)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.latents = _embedding(cfg.num_latents, cfg.d_z)
        self.cross = CrossAttentionBlock(cfg.d_z, cfg.d_i, cfg.num_heads, cfg.widening)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(cfg.d_z, cfg.num_heads, cfg.widening)
            for _ in range(cfg.num_blocks)
        )

    def forward(self, e_i: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = self.cross(self.latents.expand(e_i.shape[0], -1, -1), e_i, mask)
        for block in self.blocks:
            z = block(z)
        return z


class Decoder(nn.Module):
    """Output adapter (App. B.4): queries cross-attend z_M, then a linear layer to logits.

    No LayerNorm before the head: the decoder output is dominated by input-independent
    components (learned queries, latents); a LayerNorm there rescales the whole vector to
    unit size, so once that constant part grows the state-dependent part is squashed to
    ~0 and the policy becomes state-independent.
    """

    def __init__(self, cfg: ModelConfig, num_logits: int, widening: int | None = None) -> None:
        super().__init__()
        d_o = cfg.decoder_width
        widening = cfg.decoder_widening if widening is None else widening
        self.cross = CrossAttentionBlock(d_o, cfg.d_z, cfg.num_heads, widening)
        self.head = nn.Linear(d_o, num_logits)

    def forward(self, queries: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.cross(queries, z))


class PolicyDecoder(Decoder):
    """y_pi = L_pi(X-ATTN(q_pi, z_M)): N^A learned queries -> [B, N^A, N_B] logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, cfg.num_action_bins)
        self.queries = _embedding(cfg.num_actions, cfg.decoder_width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(self.queries.expand(z.shape[0], -1, -1), z)


class QDecoder(Decoder):
    """y_Q = L_Q(X-ATTN(phi^A(a), z_M)): K actions per state -> [B, K, N_Q] logits.

    Its cross-attention block keeps Perceiver IO's MLP (``model.q_decoder_widening``, default 1).
    Without it Q is linear in the attended state summary plus the action query, and the only
    state x action interaction is the softmax over N_Z latents: Q stays action-blind on a
    bandit whose best action flips with the context (tests/test_losses_targets.py; BENCHMARKS.md,
    "The critic's action sensitivity (two-context bandit)"). It adds 2 D_O^2 parameters.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, cfg.num_value_bins, cfg.q_decoder_widening)
        self.action_encoder = ActionEncoder(cfg.num_actions, cfg.num_gains, cfg.decoder_width)

    def forward(
        self, z: torch.Tensor, actions: torch.Tensor, action_mask: torch.Tensor
    ) -> torch.Tensor:
        return super().forward(self.action_encoder(actions, action_mask), z)


class ValueDecoder(Decoder):
    """PAC+V (App. A.3): one learned query -> [B, N_Q] logits of p_theta(v | s_t, tau)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, cfg.num_value_bins)
        self.query = _embedding(1, cfg.decoder_width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(self.query.expand(z.shape[0], -1, -1), z)[:, 0]


class PerceiverActorCritic(nn.Module):
    """Algorithm 1. ``encode(obs) -> z_M``; policy, Q and V logits from the cached z_M.

    Every parameter lives in a sub-module that is *called*, so DeepSpeed ZeRO-3 gathers it in
    that sub-module's forward hook even when ``encode``/``q_logits`` are called directly.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proprio_encoder = ProprioEncoder(
            cfg.num_proprio, cfg.num_gains, cfg.d_i, cfg.proprio_tokens
        )
        num_image_slots = cfg.num_images + cfg.num_goal_images
        self.image_encoder = (
            ImageEncoder(cfg.resnet_channels, cfg.image_size, num_image_slots, cfg.d_i)
            if num_image_slots
            else None
        )
        self.text_encoder = (
            TextEncoder(cfg.vocab_size, cfg.num_text_tokens, cfg.d_i)
            if cfg.num_text_tokens
            else None
        )
        self.perceiver = PerceiverEncoder(cfg)
        self.policy_decoder = PolicyDecoder(cfg)
        self.q_decoder = QDecoder(cfg)
        self.value_decoder = ValueDecoder(cfg) if cfg.value_head else None
        self.apply(_init_linear)
        for decoder in (self.policy_decoder, self.q_decoder, self.value_decoder):
            if decoder is not None:  # zero heads: uniform initial policy and value distributions
                nn.init.zeros_(decoder.head.weight)
                nn.init.zeros_(decoder.head.bias)

    # --- Observation encoding -----------------------------------------------------------------

    def embed(self, obs: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        """e_I = e^P + e^V + e_tau^V + e_tau^L (concatenated) and its token mask [B, N]."""
        self._check(obs)
        parts = [self.proprio_encoder(obs.proprio, obs.proprio_mask)]
        if self.image_encoder is not None:
            parts.append(self.image_encoder(*self._images(obs)))
        if self.text_encoder is not None:
            parts.append(self.text_encoder(obs.text, obs.text_mask))
        tokens = torch.cat([t for t, _ in parts], dim=1)
        mask = torch.cat([m for _, m in parts], dim=1)
        keep = mask.any(0)  # tokens that are padding in every row change nothing: drop them
        if not bool(keep.all()) and bool(keep.any()):
            tokens, mask = tokens[:, keep], mask[:, keep]
        return tokens, mask

    def encode(self, obs: Observation) -> torch.Tensor:
        """One encoder pass: z_M [B, N_Z, D_Z]."""
        return self.perceiver(*self.embed(obs))

    # --- Decoding from z_M --------------------------------------------------------------------

    def policy_logits(self, z: torch.Tensor) -> torch.Tensor:
        """[B, N^A, N_B]: independent categoricals over N_B bins per action dimension."""
        return self.policy_decoder(z)

    def q_logits(
        self, z: torch.Tensor, actions: torch.Tensor, action_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """actions [B, K, N^A] (mask [B, N^A]; None = all valid) -> [B, K, N_Q] Q logits."""
        if actions.dim() != 3 or actions.shape[-1] != self.cfg.num_actions:
            raise ValueError(
                f"actions must be [B, K, {self.cfg.num_actions}], got {tuple(actions.shape)}"
            )
        if action_mask is None:
            action_mask = torch.ones(
                actions.shape[0], actions.shape[-1], dtype=torch.bool, device=actions.device
            )
        return self.q_decoder(z, actions, action_mask)

    def value_logits(self, z: torch.Tensor) -> torch.Tensor:
        """[B, N_Q] logits of the state-value distribution (PAC+V, eq. 14)."""
        if self.value_decoder is None:
            raise ValueError("value_logits needs a model built with model.value_head=true")
        return self.value_decoder(z)

    def forward(self, obs: Observation) -> torch.Tensor:
        return self.policy_logits(self.encode(obs))

    # --- helpers ------------------------------------------------------------------------------

    def _images(self, obs: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        """Observation and goal images in one padded stack [B, N^V + N_tau^V, H, W, C]."""
        cfg, b = self.cfg, obs.batch_size
        stacks, masks = [], []
        for n, images, mask in (
            (cfg.num_images, obs.images, obs.image_mask),
            (cfg.num_goal_images, obs.goal_images, obs.goal_mask),
        ):
            if not n:
                continue
            if images is None:  # modality absent: all-padding slots
                images = torch.zeros(
                    b, n, cfg.image_size, cfg.image_size, 3, dtype=torch.uint8,
                    device=obs.proprio.device,
                )
                mask = torch.zeros(b, n, dtype=torch.bool, device=obs.proprio.device)
            stacks.append(images)
            masks.append(mask)
        return torch.cat(stacks, dim=1), torch.cat(masks, dim=1)

    def _check(self, obs: Observation) -> None:
        """Shape checks against the padded input format (no device sync)."""
        cfg, b = self.cfg, obs.batch_size
        expected = {
            "proprio": (obs.proprio, (b, cfg.num_proprio)),
            "proprio_mask": (obs.proprio_mask, (b, cfg.num_proprio)),
            "text": (obs.text, (b, cfg.num_text_tokens)),
            "text_mask": (obs.text_mask, (b, cfg.num_text_tokens)),
        }
        side = cfg.image_size
        for name, n, images, mask in (
            ("images", cfg.num_images, obs.images, obs.image_mask),
            ("goal_images", cfg.num_goal_images, obs.goal_images, obs.goal_mask),
        ):
            if images is None:
                continue
            if not n:
                raise ValueError(f"observation has {name} but the model has no slots for them")
            expected[name] = (images, (b, n, side, side, 3))
            expected[f"{name} mask"] = (mask, (b, n))
        for name, (tensor, shape) in expected.items():
            if tensor is None or tuple(tensor.shape) != shape:
                got = None if tensor is None else tuple(tensor.shape)
                raise ValueError(f"observation {name}: expected shape {shape}, got {got}")
        for name in ("proprio_mask", "text_mask"):
            if getattr(obs, name).dtype != torch.bool:
                raise ValueError(f"observation {name} must be bool (True = valid)")


def _init_linear(module: nn.Module) -> None:
    # Fan-in scaling (variance 1/fan_in) instead of a fixed std 0.02: with 0.02 the residual
    # branches are ~10x too small, so Adam's first steps (|update| ~ lr per weight) rescale
    # every weight by ~10% in the direction of the marginal-action gradient and the
    # state-dependent signal is lost (policy collapses to the marginal).
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=module.in_features ** -0.5)
        nn.init.zeros_(module.bias)
