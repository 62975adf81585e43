"""CNN evidence of change: per-stage feature maps of both dates compared location by location (torch)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rscbir.models.features import FeatureModel, stage_maps


def cnn_distances(model: FeatureModel, before: np.ndarray, after: np.ndarray, scale_before, scale_after,
                  pixel_maps: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """Per patch pair: final-stage pooled cosine distance (``cosine``), its mean over stages
    (``multilayer``) and the per-location distance averaged over locations and stages (``dense``).

    With ``pixel_maps`` also ``dense_map``: (n, h, w) per-location distances of every stage
    resized to the patch's pixels and averaged, a score at sub-patch resolution."""
    xb = torch.from_numpy(scale_before(before))
    xa = torch.from_numpy(scale_after(after))
    with torch.inference_mode():
        mb, ma = stage_maps(model, xb), stage_maps(model, xa)
        pooled = torch.stack([1 - F.cosine_similarity(b.mean(dim=(2, 3)), a.mean(dim=(2, 3)), dim=1) for b, a in zip(mb, ma)], dim=1)
        located = [1 - F.cosine_similarity(b, a, dim=1, eps=1e-6) for b, a in zip(mb, ma)]
        dense = torch.stack([d.mean(dim=(1, 2)) for d in located], dim=1)
        out = {"cosine": pooled[:, -1].numpy(), "multilayer": pooled.mean(dim=1).numpy(), "dense": dense.mean(dim=1).numpy()}
        if pixel_maps:
            size = before.shape[-2:]
            resized = [F.interpolate(d[:, None], size=size, mode="bilinear", align_corners=False)[:, 0] for d in located]
            out["dense_map"] = torch.stack(resized).mean(dim=0).numpy()
    return out





def stage_differences(model: FeatureModel, before: np.ndarray, after: np.ndarray, scale_before, scale_after,
                      directions: int) -> np.ndarray:  # fmt: skip
    """Per-pixel CNN evidence of change for patch pairs, (n, C, h, w) float32 at the patches' pixels.

    For every stage, the per-location cosine distance of the two dates (what ``dense`` averages); for the
    first ``directions`` stages also the difference of the two dates' unit feature vectors, channel by channel:
    not only how much a place changed but in which direction (vegetation to roof is not water to soil), which a
    model taught by labels or marks can tell apart."""
    xb = torch.from_numpy(scale_before(before))
    xa = torch.from_numpy(scale_after(after))
    size = before.shape[-2:]
    with torch.inference_mode():
        parts = []
        for k, (b, a) in enumerate(zip(stage_maps(model, xb), stage_maps(model, xa))):
            ub, ua = F.normalize(b, dim=1, eps=1e-6), F.normalize(a, dim=1, eps=1e-6)
            located = [0.5 * ((ua - ub) ** 2).sum(dim=1, keepdim=True)]  # = 1 - cosine
            if k < directions:
                located.append(ua - ub)
            parts.append(F.interpolate(torch.cat(located, dim=1), size=size, mode="bilinear", align_corners=False))
        return torch.cat(parts, dim=1).numpy()
__all__ = ["cnn_distances", "stage_differences"]
