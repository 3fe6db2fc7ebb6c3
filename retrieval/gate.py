"""The promotion gate: a new index version goes live only if it retrieves well enough.

Besides the ANN-recall gate (the index agrees with exact search), a version must, on the
held-out day, (1) not trail popularity at recall@k by more than ``popularity_z`` standard
errors of the paired per-user difference (a loss smaller than that is noise of one day;
``popularity_z: 0`` demands a strict win) and (2) not fall below the live version's
recall@k (same day) by more than ``max_drop`` (relative). With fewer than ``min_users``
evaluated users the figures are recorded but decide nothing (too noisy to refuse on).
"""

from __future__ import annotations

from contracts.index import RetrievalQuality
from retrieval.config import PromotionGateConfig


def decide(quality: RetrievalQuality, cfg: PromotionGateConfig) -> RetrievalQuality:
    """``quality`` with ``promoted`` / ``refused`` filled in."""
    k = str(cfg.k)
    reasons: list[str] = []
    if quality.users >= cfg.min_users:
        new = quality.recall_at_k.get(k, 0.0)
        pop = quality.popularity_recall_at_k.get(k)
        noise = cfg.popularity_z * (quality.popularity_diff_se or 0.0)
        if (
            cfg.beat_popularity
            and pop is not None
            and (
                new <= (1.0 - cfg.popularity_tolerance) * pop - noise
                if noise or cfg.popularity_tolerance
                else new <= pop
            )
        ):
            reasons.append(
                f"recall@{k} {new:.4f} does not beat popularity's {pop:.4f} on {quality.held_out_day}"
                + (
                    f" (allowed shortfall {pop - (1.0 - cfg.popularity_tolerance) * pop + noise:.4f}: "
                    f"{cfg.popularity_z} x SE {quality.popularity_diff_se or 0.0:.4f}"
                    f" + {cfg.popularity_tolerance:.0%})"
                    if noise or cfg.popularity_tolerance
                    else ""
                )
            )
        live = quality.live_recall_at_k.get(k)
        if live is not None and new < (1.0 - cfg.max_drop) * live:
            reasons.append(
                f"recall@{k} {new:.4f} is below the live version {quality.live_version}'s {live:.4f} by more than "
                f"{cfg.max_drop:.0%} on {quality.held_out_day}"
            )
    return quality.model_copy(update={"gate_k": cfg.k, "promoted": not reasons, "refused": "; ".join(reasons) or None})
