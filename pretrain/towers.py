"""The user tower (TokenFormer over field + behaviour tokens -> UR) and item tower (-> IR).

UR never depends on the target item: it is a per-user representation as of the sample's
time (its history), publishable per user. With ``target_tokens`` the stream is TokenFormer's
``[fields | behaviours | target]``, but the target token is visible to no other token (it
only reads them), so the field and behaviour tokens, and the UR pooled from them, are
exactly those of the stream without it; the target token's output is a separate,
target-aware vector used only inside the mix tower.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pretrain.config import ModelConfig
from pretrain.tokenformer import TokenFormerLayer, bfts_mask, bfts_windows


class UserTower(nn.Module):
    """Tokens ``[F user-field tokens | L behaviour tokens]`` -> TokenFormer stack -> pooled UR.

    Inputs: field embeddings [B, F, E], sequence embeddings [B, L, E], ``hist_mask`` [B, L].
    Output: UR [B, ur_dim] (and optionally the sequence tokens after each layer).
    """

    def __init__(self, cfg: ModelConfig, num_fields: int, max_len: int):
        super().__init__()
        d, e = cfg.d_model, cfg.embed_dim
        self.cfg = cfg
        self.num_fields = num_fields
        self.seq_len = max_len if cfg.use_sequence else 0
        self.field_proj = nn.Linear(e, d)
        self.field_type = nn.Parameter(torch.randn(num_fields, d) * 0.02)
        if cfg.use_sequence:
            self.seq_proj = nn.Linear(e, d)
            self.seq_pos = nn.Parameter(torch.randn(max_len, d) * 0.02)
        self.layers = nn.ModuleList(TokenFormerLayer(cfg) for _ in range(cfg.user_layers))
        self.windows = bfts_windows(cfg)
        masks = torch.stack([bfts_mask(num_fields, self.seq_len, w, cfg.bfts_global_fields) for w in self.windows])
        self.register_buffer("layer_masks", masks, persistent=False)  # [layers, N, N]
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.ur_dim)
        if cfg.target_tokens:
            self.target_type = nn.Parameter(torch.randn(d) * 0.02)
            self.target_out = nn.Linear(d, cfg.ur_dim)

    def forward(
        self,
        fields: torch.Tensor,
        seq: torch.Tensor | None,
        hist_mask: torch.Tensor | None,
        keep_seq_tokens: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """-> (UR [B, ur_dim], per-layer sequence tokens [B, L, d] with padding zeroed
        (empty unless ``keep_seq_tokens``; index 0 = tokenizer output))."""
        ur, seq_tokens, _ = self.encode(fields, seq, hist_mask, None, keep_seq_tokens)
        return ur, seq_tokens

    def encode(
        self,
        fields: torch.Tensor,
        seq: torch.Tensor | None,
        hist_mask: torch.Tensor | None,
        target: torch.Tensor | None = None,
        keep_seq_tokens: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """``target`` [B, d] (the target item's token, already projected) is appended last;
        it attends to every valid token in every layer (no window) and no token attends to it.
        -> (UR [B, ur_dim], sequence tokens as in :meth:`forward`, target output
        [B, ur_dim] or None)."""
        b = fields.shape[0]
        tokens = self.field_proj(fields) + self.field_type
        valid = torch.ones(b, self.num_fields, dtype=torch.bool, device=fields.device)
        if self.seq_len:
            tokens = torch.cat([tokens, self.seq_proj(seq) + self.seq_pos], dim=1)
            valid = torch.cat([valid, hist_mask], dim=1)
        n = tokens.shape[1]
        masks = self.layer_masks
        if target is not None:
            tokens = torch.cat([tokens, (target + self.target_type).unsqueeze(1)], dim=1)
            # row n (the target) sees everything; column n is seen by no one but itself
            masks = torch.nn.functional.pad(masks, (0, 1, 0, 1), value=False)
            masks[:, n, :] = True
            valid = torch.cat([valid, torch.ones(b, 1, dtype=torch.bool, device=fields.device)], dim=1)
        eye = torch.eye(tokens.shape[1], dtype=torch.bool, device=tokens.device)
        key_ok = valid[:, None, :]  # padded events are never attended to
        seq_tokens: list[torch.Tensor] = []
        h = tokens
        if keep_seq_tokens and self.seq_len:
            seq_tokens.append(self._seq_part(h, hist_mask))
        for layer, lmask in zip(self.layers, masks):
            h = layer(h, (lmask[None] & key_ok) | eye)
            if keep_seq_tokens and self.seq_len:
                seq_tokens.append(self._seq_part(h, hist_mask))
        h = self.norm(h)
        target_out = self.target_out(h[:, n]) if target is not None else None
        h, valid = h[:, :n], valid[:, :n]
        w = valid.to(h.dtype).unsqueeze(-1)
        pooled = (h * w).sum(1) / w.sum(1).clamp_min(1.0)
        return self.out(pooled), seq_tokens, target_out

    def _seq_part(self, h: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        return h[:, self.num_fields : self.num_fields + self.seq_len] * hist_mask.unsqueeze(-1).to(h.dtype)


class ItemTower(nn.Module):
    """Item field embeddings [B, F_i, E] -> MLP -> IR [B, ir_dim]."""

    def __init__(self, cfg: ModelConfig, num_fields: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(num_fields * cfg.embed_dim, cfg.item_hidden), nn.ReLU(), nn.Linear(cfg.item_hidden, cfg.ir_dim)
        )

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return self.net(fields.flatten(1))
