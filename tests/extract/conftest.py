"""A tiny generated log and an untrained (random-weight) checkpoint saved through pretrain's
save path: extraction needs a real checkpoint folder, not a trained model."""

from __future__ import annotations

import pytest

from tests.extract.helpers import tiny_checkpointed_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    layout, ckpt, _, days = tiny_checkpointed_run(
        tmp_path_factory.mktemp("run"), "tiny-v1", num_users=60, num_items=40, rows_per_day=300, seq_len=5
    )
    return layout, ckpt, days
