"""`pac plan`: what a training run costs before it starts.

* Parameter count of the configured model, built on the meta device (no memory, no compute).
* Memory per GPU of the model states for ZeRO 0/1/2/3 from DeepSpeed's own estimators
  (``estimate_zero2_model_states_mem_needs`` / ``estimate_zero3_model_states_mem_needs``, the
  functions behind ``..._all_cold``), plus the full bf16 copy of the target network theta' that
  every rank keeps outside the engine (built on the GPU in bf16, never on the host).
  Activations are not included. Host memory is DeepSpeed's ``zero_init=0`` figure: every rank
  builds the whole fp32 model before ``deepspeed.initialize`` partitions it.
* FLOPs per update by the counting of App. E.2: Chinchilla-style attention FLOPs (Hoffmann et
  al., 2022, App. F) for the input cross-attention, the M latent self-attention blocks and the
  two decoders, plus the encoders ENC_{P,V,L,A} with a multiply-accumulate factor MAF = 2;
  FLOPS_BWD = (2 + 1/f_theta') FLOPS_FWD and FLOPS_UPDATE = B (FLOPS_FWD + FLOPS_BWD) (Table 17).
  One forward pass of the online network with one Q query per sample: App. E.2 charges the
  target network only through the 1/f_theta' term, and the N sampled actions not at all.

Table 17 and this count: every matrix product of the count equals what torch's
``FlopCounterMode`` measures on the real model (tests/train/test_flops.py), yet it stays below
Table 17 in the latent blocks, a term no reading of App. E.2 reproduces; fitted exponents are
therefore not on the paper's FLOP axis (docs/scaling.md, "`pac scaling flops`: the FLOP count
and Table 17").
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import dataclass

import torch

from pac.config import ModelConfig, PACConfig

MAF = 2  # multiply-accumulate factor (App. E.2)
GIB = 2**30

#: Table 17 (B = 512, f_theta' = 100): forward, backward and update FLOPs per scale.
#: This count gives 0.945, 0.795, 0.743, 0.747, 0.697 of its forward column (module docstring).
TABLE_17 = {
    "XXS": (7.826e9, 1.573e10, 1.206e13),
    "XS": (1.360e10, 2.733e10, 2.096e13),
    "S": (2.341e10, 4.705e10, 3.607e13),
    "M": (4.380e10, 8.804e10, 6.750e13),
    "L": (1.040e11, 2.090e11, 1.602e14),
}


# --- parameters ----------------------------------------------------------------------------------


def parameter_counts(m: ModelConfig) -> tuple[int, int]:
    """(total parameters, largest layer's parameters) of the model, built on the meta device."""
    from pac.model import PerceiverActorCritic

    with torch.device("meta"):
        model = PerceiverActorCritic(m)
    total = sum(p.numel() for p in model.parameters())
    largest = max(
        (sum(p.numel() for p in mod.parameters(recurse=False)) for mod in model.modules()),
        default=0,
    )
    return total, largest


# --- FLOPs (App. E.2) ----------------------------------------------------------------------------


def attention_block_flops(
    n_q: int, n_kv: int, d_q: int, d_kv: int, d_attn: int, heads: int, ffw: int
) -> float:
    """One (cross- or self-) attention block with its MLP, counted as in Chinchilla App. F.

    Cross-attention counts n_q x n_kv attention entries instead of seq_len^2 (App. E.2).
    """
    q_proj = MAF * n_q * d_q * d_attn
    kv_proj = 2 * MAF * n_kv * d_kv * d_attn
    logits = MAF * n_q * n_kv * d_attn
    softmax = 3 * heads * n_q * n_kv
    reduce = MAF * n_q * n_kv * d_attn
    out_proj = MAF * n_q * d_attn * d_q
    dense = 2 * MAF * n_q * d_q * ffw
    return q_proj + kv_proj + logits + softmax + reduce + out_proj + dense


def resnet_flops(m: ModelConfig) -> float:
    """FLOPS_RESNET per image: MAF x num_kernels x (w1 w2) x (o1 o2) per 3x3 convolution.

    The image ResNet (App. C.3, ``pac.model.encoders.ResNetStage``): per stage one convolution
    at the stage's input resolution, a 3x3/2 max-pool and two residual units of two
    convolutions each; 80x80 -> 10x10 after three stages. ``num_kernels`` is read as
    c_in x c_out, the number of w1 x w2 kernels a convolution applies (App. E.2 leaves it
    open): the reading that matches torch's ``FlopCounterMode`` on the real encoder
    (tests/scaling/test_scaling.py) and Table 17's scale-independent share (BENCHMARKS.md,
    "FLOP count against Table 17").
    """
    size, c_in, total = m.image_size, 3, 0.0
    for c_out in m.resnet_channels:
        total += MAF * c_in * c_out * 9 * size * size  # stage convolution (padding 1)
        size = math.ceil(size / 2)  # 3x3 max-pool, stride 2, padding 1
        total += 4 * MAF * c_out * c_out * 9 * size * size  # two residual units
        c_in = c_out
    return total


def forward_flops(m: ModelConfig) -> dict[str, float]:
    """FLOPs of one forward pass for one time step, per part of Figure 7 (App. E.2)."""
    tokens_per_image = (m.image_size // 8) ** 2  # N_E (100 at 80x80)
    scalars = m.num_proprio * m.num_gains  # multi-scale features of the proprioception
    # proprio tokens (ProprioEncoder): N^P * N_G scalar ones (App. B.2) and/or one joint token
    scalar_tokens = 0 if m.proprio_tokens == "joint" else scalars
    joint_tokens = 0 if m.proprio_tokens == "scalar" else 1
    t_p = scalar_tokens + joint_tokens
    t_v = (m.num_images + m.num_goal_images) * tokens_per_image
    t_l = m.num_text_tokens
    t_a = m.num_actions * m.num_gains
    d_o, ffw = m.decoder_width, m.widening * m.d_z
    dec_ffw = m.decoder_widening * d_o  # decoder blocks: no MLP by default
    images = m.num_images + m.num_goal_images
    parts = {
        "ENC_P": MAF * scalar_tokens * m.d_i
        + joint_tokens * MAF * (scalars + m.d_i) * 4 * m.d_i,  # the joint token's MLP
        "ENC_V": MAF * t_v * m.d_i + images * resnet_flops(m),
        "ENC_L": MAF * t_l * m.vocab_size * m.d_i,
        "ENC_A": MAF * t_a * m.d_i,
        "XATTN_IN": attention_block_flops(
            m.num_latents, t_p + t_v + t_l, m.d_z, m.d_i, m.d_z, m.num_heads, ffw
        ),
        "SATTN_PROC": m.num_blocks
        * attention_block_flops(m.num_latents, m.num_latents, m.d_z, m.d_z, m.d_z, m.num_heads,
                                ffw),
        "XATTN_PI": attention_block_flops(
            m.num_actions, m.num_latents, d_o, m.d_z, d_o, m.num_heads, dec_ffw
        )
        + MAF * m.num_actions * d_o * m.num_action_bins,
        "XATTN_Q": attention_block_flops(
            1, m.num_latents, d_o, m.d_z, d_o, m.num_heads, m.q_decoder_widening * d_o
        )
        + MAF * d_o * m.num_value_bins,
    }
    parts["FWD"] = sum(parts.values())
    return parts


def update_flops(m: ModelConfig, batch: int, target_period: int) -> dict[str, float]:
    """FWD, BWD = (2 + 1/f_theta') FWD and UPDATE = B (FWD + BWD) for B samples (Table 17)."""
    fwd = forward_flops(m)["FWD"]
    bwd = (2 + 1 / target_period) * fwd
    return {"FWD": fwd, "BWD": bwd, "UPDATE": batch * (fwd + bwd)}


def training_flops_per_update(cfg: PACConfig) -> float:
    """FLOPs of one update of this config: every one of the B x T time steps is one sample.

    The paper's FLOP axis (Figure 3: 5e18-5e20) is updates x Table 17's UPDATE with B = 512
    trajectories (3M x 1.602e14 = 4.8e20 for L), one sample per trajectory: T times less. The
    factor is the same for every run, so scaling exponents do not depend on the choice.
    """
    samples = cfg.train.global_batch * cfg.data.trajectory_length
    return update_flops(cfg.model, samples, cfg.loss.target_update_period)["UPDATE"]


def training_tokens_per_update(cfg: PACConfig) -> int:
    """Input tokens one update consumes: B x T time steps of N tokens each (App. C.3: N = N^P
    N_G + (N^V + N_tau^V) N_E + N_tau^L, 2,634 with Table 5's format), the D of eq. 4.

    Counted like :func:`training_flops_per_update` (every time step of every trajectory)."""
    from pac.model.info import input_tokens

    return cfg.train.global_batch * cfg.data.trajectory_length * input_tokens(cfg.model)


def measure_matmul_peak(device: str = "cpu", size: int = 1024, seconds: float = 0.5,
                        dtype: torch.dtype = torch.float32) -> float:
    """Measured matmul throughput (FLOP/s) of this machine in `dtype`: the MFU denominator.

    MFU is taken against the peak of the precision a run uses (bf16 runs: the bf16 peak), so
    a bf16 run is not credited with the bf16 speed-up as utilisation.
    """
    gen = torch.Generator(device=device).manual_seed(0)  # leaves the global RNG untouched
    a = torch.randn(size, size, device=device, generator=gen).to(dtype)
    b = torch.randn(size, size, device=device, generator=gen).to(dtype)
    torch.matmul(a, b)  # warm-up
    if device != "cpu":
        torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        n += 1
    if device != "cpu":
        torch.cuda.synchronize()
    return 2 * size**3 * n / (time.perf_counter() - start)


# --- memory (DeepSpeed's estimators) -------------------------------------------------------------


@dataclass
class MemoryRow:
    stage: int
    offload: str  # "none" | "optimizer"
    gpu_gib: float  # model states per GPU (DeepSpeed estimate)
    target_gib: float  # bf16 target network theta' per GPU
    cpu_gib: float  # host memory per node (DeepSpeed estimate)

    @property
    def total_gib(self) -> float:
        return self.gpu_gib + self.target_gib


def memory_rows(total: int, largest: int, gpus: int, gpus_per_node: int) -> list[MemoryRow]:
    """Per-GPU memory of params + grads + Adam states for ZeRO 0/1/2/3 on `gpus` GPUs.

    ZeRO-2 and ZeRO-3 numbers come straight from DeepSpeed. DeepSpeed has no estimator for
    stages 0 and 1: ZeRO-0 (nothing partitioned) is its ZeRO-2 estimate for a single GPU, and
    ZeRO-1 its ZeRO-2 estimate plus the unpartitioned 16-bit gradients (2 bytes x params x
    (1 - 1/N)).
    """
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    nodes = math.ceil(gpus / gpus_per_node)
    per_node = min(gpus, gpus_per_node)
    target = 2 * total / GIB
    cpu0, gpu0 = estimate_zero2_model_states_mem_needs(total, 1, 1, cpu_offload=False)
    rows = [MemoryRow(0, "none", gpu0 / GIB, target, cpu0 * per_node / GIB)]
    for offload in (False, True):
        cpu2, gpu2 = estimate_zero2_model_states_mem_needs(
            total, num_gpus_per_node=per_node, num_nodes=nodes, cpu_offload=offload
        )
        full_grads = 0 if offload else 2 * total * (1 - 1 / (nodes * per_node))
        name = "optimizer" if offload else "none"
        rows.append(MemoryRow(1, name, (gpu2 + full_grads) / GIB, target, cpu2 / GIB))
        rows.append(MemoryRow(2, name, gpu2 / GIB, target, cpu2 / GIB))
        cpu3, gpu3, _ = estimate_zero3_model_states_mem_needs(
            total, largest, num_gpus_per_node=per_node, num_nodes=nodes, cpu_offload=offload,
            cpu_offload_params=False, zero_init=False,
        )
        rows.append(MemoryRow(3, name, gpu3 / GIB, target, cpu3 / GIB))
    return sorted(rows, key=lambda r: (r.offload != "none", r.stage))


def deepspeed_tables(total: int, largest: int, gpus: int, gpus_per_node: int) -> str:
    """DeepSpeed's own printed estimate tables (``..._all_cold``) for ZeRO-2 and ZeRO-3."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_cold

    nodes = math.ceil(gpus / gpus_per_node)
    per_node = min(gpus, gpus_per_node)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print("ZeRO-1/2 (deepspeed estimate_zero2_model_states_mem_needs_all_cold):")
        estimate_zero2_model_states_mem_needs_all_cold(total, per_node, nodes)
        print("ZeRO-3 (deepspeed estimate_zero3_model_states_mem_needs_all_cold):")
        estimate_zero3_model_states_mem_needs_all_cold(total, largest, per_node, nodes)
    return buf.getvalue()


# --- the plan ------------------------------------------------------------------------------------


@dataclass
class Plan:
    scale: str
    params: int
    largest_layer: int
    paper_params: int
    gpus: int
    gpu_mem_gib: float
    rows: list[MemoryRow]
    flops: dict[str, float]
    batch: int
    target_period: int
    headroom: float
    params_stage: int  # train.zero_stage of the params file
    params_offload: bool  # train.offload_optimizer of the params file

    def fits(self, row: MemoryRow) -> bool:
        """Model states + target fit with `headroom` of the GPU left for activations."""
        return row.total_gib <= (1 - self.headroom) * self.gpu_mem_gib

    @property
    def recommended(self) -> MemoryRow | None:
        """The lowest ZeRO stage that fits (without offload first: it is the fastest)."""
        return next((r for r in self.rows if self.fits(r)), None)


def make_plan(cfg: PACConfig, gpus: int, gpu_mem_gib: float, gpus_per_node: int = 8,
              batch: int | None = None, headroom: float = 0.2) -> Plan:
    """The plan for `gpus` GPUs; `batch` = samples per update (default B x T time steps)."""
    from pac.config import SCALES

    total, largest = parameter_counts(cfg.model)
    batch = batch or cfg.train.global_batch * cfg.data.trajectory_length  # time steps
    return Plan(
        scale=cfg.model.scale,
        params=total,
        largest_layer=largest,
        paper_params=SCALES[cfg.model.scale]["paper_params"],
        gpus=gpus,
        gpu_mem_gib=gpu_mem_gib,
        rows=memory_rows(total, largest, gpus, gpus_per_node),
        flops=update_flops(cfg.model, batch, cfg.loss.target_update_period),
        batch=batch,
        target_period=cfg.loss.target_update_period,
        headroom=headroom,
        params_stage=cfg.train.zero_stage,
        params_offload=cfg.train.offload_optimizer,
    )


def format_plan(plan: Plan) -> str:
    lines = [
        f"scale {plan.scale}: {plan.params:,} parameters"
        + (f" (paper: {plan.paper_params / 1e6:,.0f}M)" if plan.paper_params else "")
        + f", largest layer {plan.largest_layer:,}",
        f"{plan.gpus} GPU(s) x {plan.gpu_mem_gib:g} GiB; model states per GPU (DeepSpeed"
        f" estimators, bf16 + fp32 Adam) + bf16 target network theta'; activations not included",
        "",
        f"{'ZeRO':>4} {'offload':>9} {'states/GPU':>11} {'+target':>8} {'total/GPU':>10}"
        f" {'CPU/node':>9}  fits ({plan.headroom:.0%} kept for activations)",
    ]
    for r in plan.rows:
        lines.append(
            f"{r.stage:>4} {r.offload:>9} {r.gpu_gib:>8.2f}GiB {r.target_gib:>5.2f}GiB"
            f" {r.total_gib:>7.2f}GiB {r.cpu_gib:>6.1f}GiB  {'yes' if plan.fits(r) else 'no'}"
        )
    rec = plan.recommended
    lines.append(
        f"-> recommended: ZeRO-{rec.stage}"
        + (" with optimizer offload" if rec.offload != "none" else "")
        + f" ({rec.total_gib:.1f} of {plan.gpu_mem_gib:g} GiB per GPU)"
        if rec
        else "-> does not fit at any ZeRO stage: use more GPUs or a smaller scale"
    )
    offload = "optimizer" if plan.params_offload else "none"
    chosen = next(r for r in plan.rows if r.stage == plan.params_stage and r.offload == offload)
    lines.append(
        f"   params file: ZeRO-{chosen.stage}, offload {chosen.offload}:"
        f" {chosen.total_gib:.1f} GiB per GPU, fits: {'yes' if plan.fits(chosen) else 'no'}"
    )
    f = plan.flops
    lines += [
        "",
        f"FLOPs (App. E.2, B={plan.batch}, f_theta'={plan.target_period}): forward {f['FWD']:.3e}"
        f"  backward {f['BWD']:.3e}  update {f['UPDATE']:.3e}",
    ]
    if plan.scale in TABLE_17:
        fwd, _, upd = TABLE_17[plan.scale]
        scaled = upd * plan.batch / 512
        lines.append(
            f"Table 17 ({plan.scale}): forward {fwd:.3e}  update {scaled:.3e} at B={plan.batch};"
            f" this count / paper = {f['FWD'] / fwd:.2f}"
        )
    return "\n".join(lines)
