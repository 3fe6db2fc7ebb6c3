"""What the ledger keeps of each step: the hash of the config sections it depends on (a change
redoes it), its outputs, and how a reused step's outputs are put back into a :class:`RunState`."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.config import RunConfig
from pipelines.state import RunState

# The config sections each step depends on (cumulative: a change upstream redoes it).
# A dotted key is one field, hashed only when set: where a step publishes to, so pointing a
# root at another store redoes the publishing steps, while runs without a store keep their hashes.
STEP_CONFIG = {
    "ingest": ["source"],
    "pretrain": ["split", "pretrain"],
    "extract": ["extract", "aggregate", "publish_every", "gates", "storage.tables_uri"],
    "rollover": ["rollover"],
    "downstream": ["downstream"],
    "retrieval": ["retrieval", "storage.index_uri"],
    "report": [],
}


def step_hashes(cfg: RunConfig) -> dict[str, str]:
    """Step name -> 16 hex digits over its config sections and those of every earlier step."""
    import hashlib

    out, acc = {}, []
    dumped = cfg.model_dump(mode="json")
    for name, keys in STEP_CONFIG.items():
        for key in keys:
            section, _, field_ = key.partition(".")
            if not field_:
                acc.append(json.dumps(dumped[section], sort_keys=True))
            elif dumped[section][field_] is not None:
                acc.append(f"{key}={json.dumps(dumped[section][field_])}")
        out[name] = hashlib.sha256("|".join(acc).encode()).hexdigest()[:16]
    return out


def step_outputs(name: str, st: RunState) -> dict:
    """What the ledger records of step ``name`` once it finished (JSON)."""
    return {
        "ingest": lambda: {"ds": st.ds, "days": st.days, "split": st.split},
        "pretrain": lambda: {"checkpoint": str(st.checkpoint)},
        "extract": lambda: {"published": st.published},
        "rollover": lambda: {"rollover": st.rollover},
        "downstream": lambda: {"downstream": st.downstream},
        "retrieval": lambda: {"index": st.index},
        "report": lambda: {"report": str(st.report)},
    }[name]()


def restore_step(name: str, st: RunState, out: dict) -> None:
    """Put the outputs of a step reused from the ledger (:func:`step_outputs`) back into ``st``."""
    if name == "pretrain":
        from pretrain import load_checkpoint

        st.checkpoint = Path(out["checkpoint"])
        st.manifest = load_checkpoint(st.checkpoint).manifest
    elif name == "extract":
        st.published = out["published"]
    elif name == "rollover":
        st.rollover = out["rollover"]
    elif name == "downstream":
        st.downstream = out["downstream"]
    elif name == "retrieval":
        st.index = out["index"]
