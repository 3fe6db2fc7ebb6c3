"""RankUp and its baseline RankMixer as one configurable token-mixing ranker.

Shapes: B batch, F fields, De = ``emb_dim`` per field, T = ``num_tokens`` (every token,
special ones included), D = ``d_model``, K = ``num_embeddings``, M = tasks.

Pipeline: field embeddings -> tokenizer (T_f feature tokens) -> optional special tokens
(global, crossed pretrained-embedding, one per task) -> L blocks -> heads.

- ``block="rankmixer"`` (Post-LN): ``S = LN(Mix(X) + X)``, ``X' = LN(PFFN_GELU(S) + S)``.
- ``block="rankup"`` (Pre-LN): ``H' = Mix(LN(H)) + H``, ``h_t = SwiGLU_t(LN(h'_t)) + h'_t``.
- ``split="semantic"``: fields in meaning order (user, item, sequence) are concatenated
  and cut into T_f chunks; ``"permutation"``: fields are first shuffled by a fixed seeded
  permutation, stored as a buffer so it is saved with the weights and reused at serving.
- ``num_embeddings`` K > 1: every field has K tables; table k's lookups (under its own
  permutation row) feed the k-th group of feature tokens (assignment rule: all fields in
  every table, tokens split evenly over tables; papers.md leaves it open).
- special tokens take token slots, so T stays fixed across ablations (the mixer needs
  ``D % T == 0``) and each component is compared at equal width.
- heads: with task tokens, ``y_k = Tower_k([x_task_k, mean(H_L)])``; without, every
  head reads ``mean(H_L)`` (RankMixer's mean pool).

``record_states=True`` keeps ``self.states``: [(name, [B, T, D])] after the tokenizer and
after every mixer and FFN, for the effective-rank curves.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from contracts import StrictModel
from downstream.model import FieldEmbedding, RepresentationInput
from pretrain.mix_tower import FieldGenerator
from transfer import CrossedEmbeddingToken


class RankUpConfig(StrictModel):
    """Architecture of the token-mixing ranker. Defaults = RankUp at toy size, with the
    components chosen on validation (the crossed pretrained-embedding token off)."""

    block: Literal["rankmixer", "rankup"] = "rankup"
    split: Literal["semantic", "permutation"] = "permutation"
    num_embeddings: int = Field(2, ge=1, description="K embedding tables (1 = off).")
    global_token: Literal["none", "mlp", "fm", "fwfm", "dcnv2"] = Field(
        "mlp",
        description="g = f(field embeddings): MLP of their mean, FM / FwFM second-order pooling, or "
        "DCNv2 cross layers over their concatenation; then projected to D.",
    )
    global_cross_layers: int = Field(2, ge=1, description="Cross layers of the dcnv2 global token.")
    global_sfg: bool = Field(
        False,
        description="SFG in the global token's interaction (fm, fwfm, dcnv2): one side of every pair "
        "is the generated embedding G = relu(Linear(F*d -> F*d)(flatten(E))) * gamma.",
    )
    global_sfg_gamma: float = Field(1.0, gt=0)
    crossed_token: bool = Field(
        False,
        description="Proj(z_u * z_i) from the published tables. Off by default: chosen on validation "
        "(docs/downstream.md, RankUp defaults study); the ablation still measures it as +crossed_token.",
    )
    crossed_pair: tuple[str, str] = Field(("user_ur", "item_ir"), description="(user table, item table).")
    task_tokens: bool = True
    input_norm: bool = Field(
        False,
        description="LayerNorm every input token (feature and special) before the first block, so a "
        "token from another source (the crossed pretrained product) cannot outweigh the feature tokens.",
    )
    emb_dim: int = Field(16, ge=1)
    d_model: int = Field(64, ge=1)
    num_tokens: int = Field(8, ge=2, description="T, special tokens included; D % T == 0.")
    num_layers: int = Field(2, ge=1)
    ffn_mult: int = Field(2, ge=1)
    permutation_seed: int = 0

    @model_validator(mode="after")
    def _fits(self) -> "RankUpConfig":
        if self.d_model % self.num_tokens:
            raise ValueError(f"d_model {self.d_model} must be divisible by num_tokens {self.num_tokens} (token mixing)")
        if self.global_sfg and self.global_token not in ("fm", "fwfm", "dcnv2"):
            raise ValueError(f"global_sfg needs global_token fm, fwfm or dcnv2, not {self.global_token!r}")
        return self

    @classmethod
    def rankmixer(cls, **kw) -> "RankUpConfig":
        """The baseline: Post-LN GELU blocks, semantic grouping, one table, mean pool."""
        base = dict(
            block="rankmixer",
            split="semantic",
            num_embeddings=1,
            global_token="none",
            crossed_token=False,
            task_tokens=False,
        )
        return cls(**{**base, **kw})


def token_mix(x: torch.Tensor) -> torch.Tensor:
    """RankMixer's parameter-free mixing with H = T heads: ``[B, T, D] -> [B, T, D]``;
    new token h holds head h of every token."""
    B, T, D = x.shape
    return x.reshape(B, T, T, D // T).transpose(1, 2).reshape(B, T, D)


class PerTokenFFN(nn.Module):
    """Each token its own FFN: GELU ``W2 gelu(W1 x)`` or SwiGLU ``W2 (silu(W1 x) * W3 x)``.

    ``forward([B, T, D]) -> [B, T, D]``; weights [T, D, kD] so tokens never share them.
    """

    def __init__(self, T: int, D: int, mult: int, kind: Literal["gelu", "swiglu"]):
        super().__init__()
        H = D * mult
        self.kind = kind
        self.w1 = nn.Parameter(torch.randn(T, D, H) / D**0.5)
        self.b1 = nn.Parameter(torch.zeros(T, H))
        self.w2 = nn.Parameter(torch.randn(T, H, D) / H**0.5)
        self.b2 = nn.Parameter(torch.zeros(T, D))
        if kind == "swiglu":
            self.w3 = nn.Parameter(torch.randn(T, D, H) / D**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("btd,tdh->bth", x, self.w1) + self.b1
        if self.kind == "swiglu":
            h = nn.functional.silu(h) * torch.einsum("btd,tdh->bth", x, self.w3)
        else:
            h = nn.functional.gelu(h)
        return torch.einsum("bth,thd->btd", h, self.w2) + self.b2


class MixerBlock(nn.Module):
    """One block; Post-LN GELU (RankMixer) or Pre-LN SwiGLU (RankUp). [B, T, D] -> same."""

    def __init__(self, T: int, D: int, mult: int, kind: Literal["rankmixer", "rankup"]):
        super().__init__()
        self.kind = kind
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.ffn = PerTokenFFN(T, D, mult, "gelu" if kind == "rankmixer" else "swiglu")

    def forward(self, x: torch.Tensor, states: list | None = None, prefix: str = "") -> torch.Tensor:
        if self.kind == "rankmixer":
            x = self.ln1(token_mix(x) + x)
            _record(states, prefix + "mixer", x)
            x = self.ln2(self.ffn(x) + x)
        else:
            x = token_mix(self.ln1(x)) + x
            _record(states, prefix + "mixer", x)
            x = self.ffn(self.ln2(x)) + x
        _record(states, prefix + "ffn", x)
        return x


def _record(states: list | None, name: str, x: torch.Tensor) -> None:
    if states is not None:
        states.append((name, x.detach()))


class Tokenizer(nn.Module):
    """Field embeddings [B, K, F, De] -> T_f feature tokens [B, T_f, D].

    Table k's F embeddings are reordered by ``perm[k]`` (identity for semantic grouping),
    concatenated, zero-padded to a multiple of its token count and cut into chunks; each
    chunk has its own projection to D.
    """

    def __init__(self, F: int, De: int, K: int, T_f: int, D: int, permute: bool, seed: int):
        super().__init__()
        if T_f < K:
            raise ValueError(f"{T_f} feature token(s) cannot be shared by {K} embedding tables")
        rng = np.random.default_rng(seed)
        perms = np.stack([rng.permutation(F) if permute else np.arange(F) for _ in range(K)])
        self.register_buffer("perm", torch.as_tensor(perms, dtype=torch.long))  # saved with the model
        self.counts = [len(a) for a in np.array_split(np.arange(T_f), K)]
        self.chunk = [-(-F * De // c) for c in self.counts]  # ceil
        self.proj = nn.ParameterList(
            [nn.Parameter(torch.randn(c, w, D) / w**0.5) for c, w in zip(self.counts, self.chunk)]
        )
        self.bias = nn.Parameter(torch.zeros(T_f, D))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        B = emb.shape[0]
        tokens = []
        for k, (c, w) in enumerate(zip(self.counts, self.chunk)):
            flat = emb[:, k, self.perm[k]].reshape(B, -1)
            flat = nn.functional.pad(flat, (0, c * w - flat.shape[1]))
            tokens.append(torch.einsum("btw,twd->btd", flat.view(B, c, w), self.proj[k]))
        return torch.cat(tokens, dim=1) + self.bias


class GlobalToken(nn.Module):
    """RankUp's global token ``g = f(field embeddings)``: ``forward(E [B, n, De]) -> [B, D]``.

    - ``mlp``: ``MLP(mean_i e_i)``;
    - ``fm``: ``P(0.5 * ((sum_i e_i)^2 - sum_i e_i^2))`` = ``P(sum_{i<j} e_i * e_j)``, kept per coordinate;
    - ``fwfm``: ``P(sum_{i<j} r_ij e_i * e_j)`` with a learned weight per field pair;
    - ``dcnv2``: ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l`` over ``x0 = flatten(E)``, then ``P(x_L)``.

    With ``sfg`` one side of every interaction is generated (pretrain.mix_tower.FieldGenerator,
    ``G = relu(Linear(n*De -> n*De)(flatten(E))) * gamma``): FM / FwFM pair raw with generated,
    ``sum_{i<j} r_ij (e_i * g_j + g_i * e_j) / 2`` (r = 1 for FM); DCNv2 uses
    ``x_{l+1} = x_l + flatten(G) * (W_l x_l + b_l)``.
    """

    def __init__(
        self, kind: str, n: int, De: int, D: int, cross_layers: int = 2, sfg: bool = False, gamma: float = 1.0
    ):
        super().__init__()
        self.kind = kind
        self.gen = FieldGenerator(n * De, gamma) if sfg else None
        if kind == "mlp":
            self.f = nn.Sequential(nn.Linear(De, D), nn.ReLU(), nn.Linear(D, D))
        elif kind in ("fm", "fwfm"):
            self.f = nn.Linear(De, D)
            if kind == "fwfm":
                self.r = nn.Parameter(torch.ones(n, n))  # only i < j is used; starts as FM
                self.register_buffer("upper", torch.triu(torch.ones(n, n), 1), persistent=False)
        elif kind == "dcnv2":
            self.cross = nn.ModuleList(nn.Linear(n * De, n * De) for _ in range(cross_layers))
            self.f = nn.Linear(n * De, D)
        else:
            raise ValueError(f"unknown global token {kind!r}")

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        if self.kind == "mlp":
            return self.f(e.mean(1))
        g = self.gen(e) if self.gen is not None else e
        if self.kind == "dcnv2":
            x0, side = e.flatten(1), g.flatten(1)
            x = x0
            for lin in self.cross:
                x = x + side * lin(x)
            return self.f(x)
        if self.kind == "fm":
            # sum_{i != j} e_i * g_j / 2 (= sum_{i<j} e_i * e_j when g = e)
            return self.f(0.5 * (e.sum(1) * g.sum(1) - (e * g).sum(1)))
        R = self.r * self.upper
        return self.f(0.5 * (torch.einsum("bid,ij,bjd->bd", e, R, g) + torch.einsum("bid,ij,bjd->bd", g, R, e)))


class TokenMixerRanker(nn.Module):
    """RankUp / RankMixer ranker. ``forward(batch) -> logits [B, M]`` (batch: downstream.data)."""

    def __init__(
        self,
        cfg: RankUpConfig,
        vocab_sizes: dict[str, int],
        num_tasks: int,
        *,
        user_columns: list[str],
        item_columns: list[str],
        seq_field: str | None,
        rep_dims: dict[str, int] | None = None,
    ):
        super().__init__()
        self.cfg, self.num_tasks = cfg, num_tasks
        K, De, D, T = cfg.num_embeddings, cfg.emb_dim, cfg.d_model, cfg.num_tokens
        # semantic order: user fields, item fields, then the pooled sequence
        ordered = {c: vocab_sizes[c] for c in [*user_columns, *item_columns] if c in vocab_sizes}
        ordered.update({c: n for c, n in vocab_sizes.items() if c not in ordered})
        self.embeds = nn.ModuleList([FieldEmbedding(ordered, De, seq_field) for _ in range(K)])
        F = self.embeds[0].num_fields
        n_special = (cfg.global_token != "none") + cfg.crossed_token + (num_tasks if cfg.task_tokens else 0)
        T_f = T - n_special
        if T_f < 1:
            raise ValueError(f"num_tokens {T} leaves no feature token after {n_special} special token(s)")
        self.tokenizer = Tokenizer(F, De, K, T_f, D, cfg.split == "permutation", cfg.permutation_seed)
        if cfg.global_token != "none":
            self.global_f = GlobalToken(
                cfg.global_token, K * F, De, D, cfg.global_cross_layers, cfg.global_sfg, cfg.global_sfg_gamma
            )
        self.reps = None
        if cfg.crossed_token:
            u, i = cfg.crossed_pair
            dims = rep_dims or {}
            if u not in dims or i not in dims:
                raise ValueError(f"crossed token needs tables {u!r} and {i!r} joined; have {sorted(dims)}")
            if dims[u] != dims[i]:
                raise ValueError(f"crossed token needs equal dims, {u} has {dims[u]}, {i} has {dims[i]}")
            self.reps = RepresentationInput({u: dims[u], i: dims[i]})
            self.cross = CrossedEmbeddingToken(dims[u], D)
        if cfg.task_tokens:
            self.task_tok = nn.Parameter(torch.randn(num_tasks, D) * 0.02)
        self.in_ln = nn.LayerNorm(D) if cfg.input_norm else nn.Identity()
        self.blocks = nn.ModuleList([MixerBlock(T, D, cfg.ffn_mult, cfg.block) for _ in range(cfg.num_layers)])
        self.final_ln = nn.LayerNorm(D) if cfg.block == "rankup" else nn.Identity()
        head_in = 2 * D if cfg.task_tokens else D
        self.towers = nn.ModuleList(
            [nn.Sequential(nn.Linear(head_in, D), nn.ReLU(), nn.Linear(D, 1)) for _ in range(num_tasks)]
        )
        self.record_states = False
        self.states: list[tuple[str, torch.Tensor]] = []

    def tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Input token matrix [B, T, D]: [task tokens | global | crossed | feature tokens]."""
        emb = torch.stack([e(batch) for e in self.embeds], dim=1)  # [B, K, F, De]
        toks = [self.tokenizer(emb)]
        B = emb.shape[0]
        if self.cfg.global_token != "none":
            toks.insert(0, self.global_f(emb.flatten(1, 2)).unsqueeze(1))  # fields [B, K*F, De]
        if self.cfg.crossed_token:
            u, i = self.cfg.crossed_pair
            r = self.reps(batch)
            toks.insert(0, self.cross(r[u], r[i]).unsqueeze(1))
        if self.cfg.task_tokens:
            toks.insert(0, self.task_tok.expand(B, -1, -1))
        return torch.cat(toks, dim=1)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Final token states [B, T, D] (after the last block and, for RankUp, the final LN)."""
        states = [] if self.record_states else None
        x = self.in_ln(self.tokens(batch))
        _record(states, "tokenizer", x)
        for i, block in enumerate(self.blocks):
            x = block(x, states, f"L{i + 1}.")
        if states is not None:
            self.states = states
        return self.final_ln(x)

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final tokens [B, T, D] -> logits [B, M]. With task tokens (slots 0..M-1, see
        :meth:`tokens`) head k reads ``[x[:, k], mean_t x[:, t]]``; without, ``mean_t x[:, t]``."""
        pooled = x.mean(1)
        if self.cfg.task_tokens:
            return self.task_heads(x[:, : self.num_tasks], pooled)
        return torch.cat([tower(pooled) for tower in self.towers], dim=-1)

    def task_heads(self, task_states: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """``y_k = Tower_k([task_states[:, k], pooled])``: task_states [B, M, D], pooled [B, D] -> [B, M]."""
        return torch.cat(
            [tower(torch.cat([task_states[:, k], pooled], -1)) for k, tower in enumerate(self.towers)], dim=-1
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head_logits(self.encode(batch))


# --- defaults study (issue 15.6): chosen on validation ------------------------------------
def study(argv: list[str] | None = None) -> dict:
    """``python -m downstream.rankup --root ROOT --valid-start D --test-start D [--seeds N]
    [--epochs N] [--lr X] [--variant NAME=JSON ...] [--skip-defaults] [--out FILE]``.

    Trains RankMixer and RankUp variants (``NAME=JSON``: RankUpConfig overrides on the
    default RankUp, or on RankMixer with ``"__rankmixer__": true``; ``rankmixer`` and
    ``rankup`` run unless ``--skip-defaults``; ``lr``/``epochs`` keys in the JSON change
    the training instead) on every scenario pooled, the same data, split and training as
    ``lfm4ads experiment rankup``. Prints per variant: validation click AUC (the selection
    metric), test AUC, effective rank after the last layer (test rows), params. Last stdout
    line: JSON {variant: {...}}."""
    import argparse
    import json
    import time
    from pathlib import Path

    from contracts import RunLayout
    from datasources import log_days, read_log_spec
    from downstream.data import (
        build_scenario_data,
        read_splits,
        rep_table_paths,
        select_rows,
    )
    from downstream.evaluate import torch_threads
    from downstream.train import fit
    from pretrain import effective_rank

    p = argparse.ArgumentParser(prog="python -m downstream.rankup")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--valid-start", required=True)
    p.add_argument("--test-start", required=True)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--erank-rows", type=int, default=1024)
    p.add_argument("--variant", action="append", default=[], help="NAME=JSON (RankUpConfig overrides)")
    p.add_argument("--skip-defaults", action="store_true", help="run only the --variant ones")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    layout = RunLayout(a.root)
    days = sorted(log_days(layout.log))
    tr = [d for d in days if d < a.valid_start]
    va = [d for d in days if a.valid_start <= d < a.test_start]
    te = [d for d in days if d >= a.test_start]
    spec = read_log_spec(layout.log)
    raw = read_splits(layout.log, tr, va, te)
    tables = {k: select_rows(v, None, "all") for k, v in raw.items()}
    reps = ["user_ur", "item_ir", "user_cr", "item_cr"]
    data = build_scenario_data(tables, spec, rep_table_paths(layout.root, reps))
    canon = spec.canonical()
    variants: dict[str, dict] = {} if a.skip_defaults else {"rankmixer": {"__rankmixer__": True}, "rankup": {}}
    for v in a.variant:
        name, js = v.split("=", 1)
        variants[name] = json.loads(js)
    results: dict[str, dict] = {}
    print(f"rows train/valid/test {data.train.num_rows}/{data.valid.num_rows}/{data.test.num_rows}", flush=True)
    with torch_threads(1):
        for name, over in variants.items():
            over = dict(over)
            lr, epochs = over.pop("lr", a.lr), over.pop("epochs", a.epochs)
            cfg = (
                RankUpConfig.rankmixer(**{k: v for k, v in over.items() if k != "__rankmixer__"})
                if over.get("__rankmixer__")
                else RankUpConfig(**over)
            )
            runs = []
            for seed in range(a.seeds):
                t0 = time.perf_counter()

                def build(cfg=cfg):
                    return TokenMixerRanker(
                        cfg,
                        data.encoder.vocab_sizes,
                        len(data.tasks),
                        user_columns=["user_id", *canon.user_features],
                        item_columns=["item_id", *canon.item_features],
                        seq_field=canon.sequence.item_field,
                        rep_dims=data.rep_dims,
                    )

                model, res = fit(
                    build,
                    data.train,
                    data.valid,
                    data.test,
                    data.tasks,
                    seed=seed,
                    epochs=epochs,
                    lr=lr,
                    batch_size=a.batch_size,
                    patience=a.patience,
                )
                model.eval()
                model.record_states = True
                with torch.no_grad():
                    model(data.test.take(torch.arange(min(a.erank_rows, data.test.num_rows))))
                er = effective_rank(model.states[-1][1])
                runs.append(
                    {
                        "valid": res.valid_auc,
                        "test": res.test_auc[data.tasks[0]],
                        "erank": er,
                        "epochs": res.epochs,
                        "best_epoch": res.best_epoch,
                    }
                )
                print(
                    f"{name} seed={seed}: valid {res.valid_auc:.4f} test {runs[-1]['test']:.4f} erank {er:.2f} "
                    f"({res.best_epoch}/{res.epochs} ep, {time.perf_counter() - t0:.0f}s)",
                    flush=True,
                )
            params = sum(q.numel() for q in model.parameters())
            results[name] = {k: float(np.mean([r[k] for r in runs])) for k in ("valid", "test", "erank")}
            results[name].update(
                test_std=float(np.std([r["test"] for r in runs])),
                valid_std=float(np.std([r["valid"] for r in runs])),
                params=params,
                runs=runs,
            )
            if a.out:
                a.out.write_text(json.dumps(results, indent=1))
    print("| variant | params | valid AUC | test AUC | erank last |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['params']} | {r['valid']:.4f} ± {r['valid_std']:.4f} | {r['test']:.4f} ± "
            f"{r['test_std']:.4f} | {r['erank']:.2f} |"
        )
    print(json.dumps({k: {kk: v[kk] for kk in ("valid", "test", "erank", "params")} for k, v in results.items()}))
    return results


if __name__ == "__main__":
    study()
