"""The LFM4Ads foundation model (papers.md section 1): user tower -> UR, item tower -> IR,
mix tower with separate ad and content branches ending in per-scenario, per-task heads.

Addressable layers (stable names, see :meth:`FoundationModel.layer_infos`):
``user_tower`` (UR), ``item_tower`` (IR), ``ad.cross_1..n``, ``ad.mlp_1..m``,
``content.cross_1..n``, ``content.mlp_1..m`` (CR).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from contracts import DatasetSpec, LayerInfo
from contracts.dataset import CANONICAL_ITEM_ID, CANONICAL_USER_ID
from pretrain.config import ModelConfig
from pretrain.mix_tower import MixBranch
from pretrain.towers import ItemTower, UserTower

BRANCHES = ("ad", "content")


class FoundationModel(nn.Module):
    """Built from a :class:`ModelConfig`, the canonical spec and the encoder's vocab sizes.

    The batch is :meth:`pretrain.FeatureEncoder.encode`'s dict; B rows, T tasks.
    """

    def __init__(self, cfg: ModelConfig, spec: DatasetSpec, vocab_sizes: dict[str, int]):
        super().__init__()
        spec = spec.canonical()
        self.cfg, self.spec = cfg, spec
        self.user_fields = [CANONICAL_USER_ID, *spec.user_features]
        self.item_fields = [CANONICAL_ITEM_ID, *spec.item_features]
        self.seq_field = spec.sequence.item_field
        missing = [c for c in [*self.user_fields, *self.item_fields] if c not in vocab_sizes]
        if missing:
            raise ValueError(f"vocab_sizes lacks column(s) {missing}")
        self.tasks = list(spec.tasks)
        self.num_scenarios = len(spec.scenarios)
        # ModuleDict keys may not contain '.', user column names might: index tables by position.
        self.columns = [*self.user_fields, *self.item_fields]
        self.vocab_sizes = {c: int(vocab_sizes[c]) for c in self.columns}
        self.embeddings = nn.ModuleList(nn.Embedding(self.vocab_sizes[c], cfg.embed_dim) for c in self.columns)
        for emb in self.embeddings:
            nn.init.normal_(emb.weight, std=0.05)
        self.user_tower = UserTower(cfg, len(self.user_fields), spec.sequence.max_len)
        self.item_tower = ItemTower(cfg, len(self.item_fields))
        self.branches = nn.ModuleDict({b: MixBranch(cfg, self.num_scenarios, len(self.tasks)) for b in BRANCHES})
        if cfg.target_tokens:  # the target item's token in the user-tower stream (towers.py)
            self.target_proj = nn.Linear(len(self.item_fields) * cfg.embed_dim, cfg.d_model)

    def load_warm_start(self, old_state: dict[str, torch.Tensor]) -> None:
        """Copy a previous checkpoint's weights; embedding tables may have grown
        (:meth:`FeatureEncoder.extend`): old rows are copied, new rows keep their init."""
        own = self.state_dict()
        if own.keys() != old_state.keys():
            raise ValueError(f"warm start: parameter names differ: {sorted(set(own) ^ set(old_state))[:5]}")
        for k, old in old_state.items():
            cur = own[k]
            if cur.shape == old.shape:
                cur.copy_(old)
            elif k.startswith("embeddings.") and cur.shape[1:] == old.shape[1:] and old.shape[0] <= cur.shape[0]:
                cur[: old.shape[0]].copy_(old)
            else:
                raise ValueError(f"warm start: {k} has shape {tuple(old.shape)}, this model {tuple(cur.shape)}")

    # --- pieces ----------------------------------------------------------------------
    def _emb(self, col: str, idx: torch.Tensor) -> torch.Tensor:
        return self.embeddings[self.columns.index(col)](idx)

    def check_batch(self, batch: dict[str, torch.Tensor]) -> None:
        """Raise ValueError naming the key on a missing key or an id outside its vocabulary
        (a batch not made by this model's encoder), instead of an opaque index error."""
        cols = [*self.columns, "hist_seq"] if self.cfg.use_sequence else list(self.columns)
        for key in [*cols, "scenario", "is_ad"]:
            if key not in batch:
                raise ValueError(f"batch lacks {key!r} (keys: {sorted(batch)})")
        for key in cols:
            size = self.vocab_sizes[self.seq_field if key == "hist_seq" else key]
            ids = batch[key]
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
                raise ValueError(
                    f"batch[{key!r}] holds ids in [{int(ids.min())}, {int(ids.max())}], outside the vocabulary "
                    f"[0, {size}): encode rows with this checkpoint's FeatureEncoder"
                )
        scen = batch["scenario"]
        if scen.numel() and (int(scen.min()) < 0 or int(scen.max()) >= self.num_scenarios):
            raise ValueError(f"batch['scenario'] holds indices outside [0, {self.num_scenarios})")

    def user_representation(
        self, batch: dict[str, torch.Tensor], keep_seq_tokens: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """UR [B, ur_dim] and (optionally) the per-layer sequence tokens [B, L, d_model]."""
        fields = torch.stack([self._emb(c, batch[c]) for c in self.user_fields], dim=1)
        seq = self._emb(self.seq_field, batch["hist_seq"]) if self.cfg.use_sequence else None
        return self.user_tower(fields, seq, batch.get("hist_mask"), keep_seq_tokens)

    def item_representation(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """IR [B, ir_dim]."""
        return self.item_tower(self._item_fields(batch))

    def _item_fields(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([self._emb(c, batch[c]) for c in self.item_fields], dim=1)  # [B, F_i, E]

    def mix_input(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(UR [B, ur_dim], IR [B, ir_dim], x0 [B, ur_dim + ir_dim]): the mix tower's input.

        Without ``target_tokens`` x0 = [UR, IR]. With it, x0 = [UR + TA, IR], TA the target
        token's output of the user-tower stream: target-aware inside the mix tower, while UR
        (what is published) is unchanged by the target item."""
        item_fields = self._item_fields(batch)
        ir = self.item_tower(item_fields)
        if not self.cfg.target_tokens:
            ur, _ = self.user_representation(batch)
            return ur, ir, torch.cat([ur, ir], dim=1)
        fields = torch.stack([self._emb(c, batch[c]) for c in self.user_fields], dim=1)
        seq = self._emb(self.seq_field, batch["hist_seq"]) if self.cfg.use_sequence else None
        target = self.target_proj(item_fields.flatten(1))
        ur, _, ta = self.user_tower.encode(fields, seq, batch.get("hist_mask"), target)
        return ur, ir, torch.cat([ur + ta, ir], dim=1)

    # --- public API ------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits [B, T]: ad rows through the ad branch, content rows through the content
        branch, each row's head picked by its ``scenario`` index."""
        self.check_batch(batch)
        _, _, x0 = self.mix_input(batch)
        is_ad = batch["is_ad"].bool()
        scen = batch["scenario"].long()
        logits = x0.new_zeros(x0.shape[0], len(self.tasks))
        for name, rows in (("ad", is_ad), ("content", ~is_ad)):
            idx = rows.nonzero(as_tuple=True)[0]
            if idx.numel() == 0:
                # still touch the branch so DDP sees a gradient for every parameter
                logits = logits + 0.0 * self.branches[name](x0[:1])[0].sum()
                continue
            heads, _ = self.branches[name](x0[idx])  # [b, S, T]
            logits = logits.index_put((idx,), heads[torch.arange(idx.numel()), scen[idx]])
        return logits

    def representations(self, batch: dict[str, torch.Tensor], layers: list[str]) -> dict[str, torch.Tensor]:
        """{name: [B, dim]} for exactly the requested layers (every row goes through the
        branch a CR name addresses). Unknown name -> KeyError listing the valid names."""
        valid = self.layer_names()
        unknown = [n for n in layers if n not in valid]
        if unknown:
            raise KeyError(f"unknown layer(s) {unknown}; valid: {valid}")
        self.check_batch(batch)
        out: dict[str, torch.Tensor] = {}
        ur, ir, x0 = self.mix_input(batch)
        if "user_tower" in layers:
            out["user_tower"] = ur
        if "item_tower" in layers:
            out["item_tower"] = ir
        for b in BRANCHES:
            keep = {n.split(".", 1)[1] for n in layers if n.startswith(b + ".")}
            if keep:
                _, kept = self.branches[b](x0, keep)
                out.update({f"{b}.{k}": v for k, v in kept.items()})
        return {n: out[n] for n in layers}

    def layer_names(self) -> list[str]:
        return [li.name for li in self.layer_infos()]

    def layer_infos(self) -> list[LayerInfo]:
        infos = [
            LayerInfo(name="user_tower", dim=self.cfg.ur_dim, kind="UR"),
            LayerInfo(name="item_tower", dim=self.cfg.ir_dim, kind="IR"),
        ]
        cross_dim = self.cfg.ur_dim + self.cfg.ir_dim
        for b in BRANCHES:
            infos += [
                LayerInfo(name=f"{b}.cross_{i + 1}", dim=cross_dim, kind="CR") for i in range(self.cfg.cross_layers)
            ]
            infos += [LayerInfo(name=f"{b}.mlp_{i + 1}", dim=d, kind="CR") for i, d in enumerate(self.cfg.mlp_dims)]
        return infos

    @property
    def default_cr_layer(self) -> str:
        """Penultimate MLP layer of the ad branch (the LFM4Ads production finding); the only
        MLP layer when there is one."""
        m = len(self.cfg.mlp_dims)
        return f"ad.mlp_{max(1, m - 1)}"
