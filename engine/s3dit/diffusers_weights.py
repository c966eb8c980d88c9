"""Released Z-Image weights for :class:`engine.s3dit.model.S3DiT`: diffusers' names onto ours.

diffusers' ``ZImageTransformer2DModel`` keeps q/k/v and the two SwiGLU input projections apart
and its patch embedder and final layer in per-patch-size dicts; our model fuses the projections
(one matmul each) and has one patch size. :func:`convert_diffusers_state_dict` maps one state
dict onto the other, for loading released weights and for the fidelity test and benchmark.
"""

from __future__ import annotations

import torch


def convert_diffusers_state_dict(
    sd: dict[str, torch.Tensor], patch_key: str = "2-1"
) -> dict[str, torch.Tensor]:
    """Map a diffusers ``ZImageTransformer2DModel`` state dict onto this model's names.

    This is how released Z-Image weights load here, and how the fidelity test copies weights.
    """
    out: dict[str, torch.Tensor] = {}
    block_names = {
        "attention.norm_q.weight": "attn.q_norm.weight",
        "attention.norm_k.weight": "attn.k_norm.weight",
        "attention.to_out.0.weight": "attn.out.weight",
        "feed_forward.w2.weight": "ffn.w2.weight",
        "attention_norm1.weight": "attn_norm1.weight",
        "attention_norm2.weight": "attn_norm2.weight",
        "ffn_norm1.weight": "ffn_norm1.weight",
        "ffn_norm2.weight": "ffn_norm2.weight",
        "adaLN_modulation.0.weight": "adaLN_modulation.weight",
        "adaLN_modulation.0.bias": "adaLN_modulation.bias",
    }
    prefixes = sorted({k.rsplit(".attention.", 1)[0] for k in sd if ".attention.to_q." in k})
    for prefix in prefixes:  # noise_refiner.0, context_refiner.1, layers.7, ...
        qkv = [sd[f"{prefix}.attention.to_{n}.weight"] for n in "qkv"]
        out[f"{prefix}.attn.qkv.weight"] = torch.cat(qkv, 0)
        w13 = [sd[f"{prefix}.feed_forward.w{i}.weight"] for i in (1, 3)]
        out[f"{prefix}.ffn.w13.weight"] = torch.cat(w13, 0)
        for theirs, ours in block_names.items():
            if f"{prefix}.{theirs}" in sd:
                out[f"{prefix}.{ours}"] = sd[f"{prefix}.{theirs}"]
    top = {
        f"all_x_embedder.{patch_key}.weight": "x_embedder.weight",
        f"all_x_embedder.{patch_key}.bias": "x_embedder.bias",
        f"all_final_layer.{patch_key}.linear.weight": "final_layer.linear.weight",
        f"all_final_layer.{patch_key}.linear.bias": "final_layer.linear.bias",
        f"all_final_layer.{patch_key}.adaLN_modulation.1.weight": "final_layer.adaLN_modulation.1.weight",
        f"all_final_layer.{patch_key}.adaLN_modulation.1.bias": "final_layer.adaLN_modulation.1.bias",
        "cap_embedder.0.weight": "cap_embedder.0.weight",
        "cap_embedder.1.weight": "cap_embedder.1.weight",
        "cap_embedder.1.bias": "cap_embedder.1.bias",
        "t_embedder.mlp.0.weight": "t_embedder.mlp.0.weight",
        "t_embedder.mlp.0.bias": "t_embedder.mlp.0.bias",
        "t_embedder.mlp.2.weight": "t_embedder.mlp.2.weight",
        "t_embedder.mlp.2.bias": "t_embedder.mlp.2.bias",
    }
    for theirs, ours in top.items():
        out[ours] = sd[theirs]
    out["x_pad_token"] = sd["x_pad_token"].reshape(-1)
    out["cap_pad_token"] = sd["cap_pad_token"].reshape(-1)
    return out
