"""The extraction benchmark's input: a generated log and a random-weight checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import torch

MODELS = {
    "default": {},
    # a much cheaper model: the pipeline's own costs (decode, write, health, Ray) weigh more
    "small": {
        "d_model": 8,
        "num_heads": 1,
        "user_layers": 1,
        "embed_dim": 8,
        "ur_dim": 16,
        "ir_dim": 16,
        "item_hidden": 16,
        "cross_layers": 1,
        "mlp_dims": [32, 16],
    },
}


def build(work: Path, rows: int, days: int = 1, model: str = "default"):
    """Generated log of ``days`` days x ``rows`` rows each and a random-weight checkpoint."""
    from contracts import CheckpointManifest, RunLayout
    from datasources import GeneratorConfig, generate_log, read_log
    from pretrain import FeatureEncoder, FoundationModel, ModelConfig
    from pretrain.checkpoint import save_checkpoint

    layout = RunLayout(work)
    gen = GeneratorConfig(days=days, rows_per_day=rows, start_date=date(2026, 1, 1))
    spec = generate_log(gen, layout.log)
    sample = read_log(layout.log, columns=spec.categorical_columns)
    encoder = FeatureEncoder.fit(sample, spec, 1, None)
    del sample
    mcfg = ModelConfig(**MODELS[model])
    torch.manual_seed(0)
    fm = FoundationModel(mcfg, spec, encoder.vocab_sizes).eval()
    manifest = CheckpointManifest(
        model_version="bench",
        created_at=datetime.now(timezone.utc),
        dataset=spec.canonical(),
        model_config_data=mcfg.model_dump(mode="json"),
        config_hash="bench",
        data_version="bench",
        vocab_sizes=encoder.vocab_sizes,
        layers=fm.layer_infos(),
        default_cr_layer=fm.default_cr_layer,
    )
    return layout, save_checkpoint(layout.checkpoints, fm, encoder, manifest), "2026-01-01"


def build_once(work: Path, rows_per_day: int, days: int, model: str):
    """Build in a child process (its memory never counts in this process's peak RSS) unless
    ``work`` already holds a build of the same shape (``--workdir`` reuse)."""
    from contracts import RunLayout

    tag = {"rows_per_day": rows_per_day, "days": days, "model": model}
    stamp = work / "bench-build.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == tag):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.extract",
                "--build-only",
                "--workdir",
                str(work),
                "--rows",
                str(rows_per_day * days),
                "--days",
                str(days),
                "--model",
                model,
            ],
            check=True,
        )
    layout = RunLayout(work)
    ckpt = next(p for p in sorted(layout.checkpoints.iterdir()) if (p / "manifest.json").is_file())
    return layout, ckpt
