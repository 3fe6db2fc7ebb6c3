import numpy as np
import pyarrow.compute as pc
import torch

from datasources import GeneratorConfig, generate_days, generate_log, log_days, read_log, read_log_spec

SMALL = GeneratorConfig(num_users=300, num_items=150, days=3, rows_per_day=2000, windows_per_day=6)


def test_deterministic_given_seed():
    a = [t for _, t in generate_days(SMALL)]
    b = [t for _, t in generate_days(SMALL)]
    c = [t for _, t in generate_days(SMALL.model_copy(update={"seed": 1}))]
    assert all(x.equals(y) for x, y in zip(a, b))
    assert not a[0].equals(c[0])


def test_two_logs_of_one_config_hold_the_same_rows_in_the_same_order(tmp_path):
    """The log's file order is the training stream's order: two roots written from one
    config must hold byte-equal rows in equal order (delta-rs's writer reordered them)."""
    import pyarrow.parquet as pq

    from datasources.log_store import log_files

    generate_log(SMALL, tmp_path / "a" / "log")
    generate_log(SMALL, tmp_path / "deeper" / "b" / "log")
    for ds, want in generate_days(SMALL):
        got = [
            pa_concat([pq.read_table(f.removeprefix("file://")) for f in log_files(tmp_path / r / "log", ds)])
            for r in ("a", "deeper/b")
        ]
        assert got[0].equals(got[1])
        assert got[0].equals(want.drop_columns(["ds"]).cast(got[0].schema))  # the generator's order, kept


def pa_concat(tables):
    import pyarrow as pa

    return pa.concat_tables(tables)


def test_shape_of_the_log(tmp_path):
    spec = generate_log(SMALL, tmp_path / "log")
    assert read_log_spec(tmp_path / "log") == spec
    assert log_days(tmp_path / "log") == ["2026-01-01", "2026-01-02", "2026-01-03"]
    t = read_log(tmp_path / "log")
    assert t.num_rows == 6000
    sizes = np.bincount(t["scenario"].to_numpy())
    assert sizes[0] > 5 * sizes[3] > 0  # very different scenario sizes, the small one non-empty
    conv = t["conversion"]
    content = pc.equal(t["sample_type"], "content")
    # Conversion is absent (null) on content samples and sparse on ads.
    assert pc.all(pc.is_null(conv.filter(content))).as_py()
    ad_conv = pc.mean(conv.filter(pc.invert(content))).as_py()
    assert 0.0 < ad_conv < pc.mean(t["click"]).as_py() / 2


def test_sequences_hold_only_earlier_clicks():
    """Plain-loop reference: every sequence item was clicked by that user strictly earlier."""
    (_, day0), (_, day1) = list(generate_days(SMALL))[:2]
    rows = day0.to_pylist() + day1.to_pylist()
    clicks: dict[str, list] = {}
    for r in rows:
        earlier = clicks.get(r["user_id"], [])
        for item in r["hist_seq"]:
            assert any(it == item and t < r["event_time"] for it, t in earlier)
        if r["click"] == 1.0:
            clicks.setdefault(r["user_id"], []).append((r["item_id"], r["event_time"]))
    assert sum(len(r["hist_seq"]) > 0 for r in rows) > len(rows) // 4


def _auc(y, s):
    order = np.argsort(s)
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    pos = y == 1
    return (ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum())


def test_planted_interaction_is_learnable():
    """A factorisation model beats a biases-only model on later days: the latent signal is real."""
    cfg = GeneratorConfig(num_users=400, num_items=200, days=6, rows_per_day=6000, drift=0.0)
    tables = [tb for _, tb in generate_days(cfg)]
    import pyarrow as pa

    t = pa.concat_tables(tables)
    u = torch.tensor([int(x[1:]) for x in t["user_id"].to_pylist()])
    i = torch.tensor([int(x[1:]) for x in t["item_id"].to_pylist()])
    y = torch.tensor(t["click"].to_numpy(), dtype=torch.float32)
    n_train = 5 * cfg.rows_per_day

    def fit(dim):
        torch.manual_seed(0)
        eu, ei = torch.nn.Embedding(cfg.num_users, max(dim, 1)), torch.nn.Embedding(cfg.num_items, max(dim, 1))
        bu, bi = torch.nn.Embedding(cfg.num_users, 1), torch.nn.Embedding(cfg.num_items, 1)
        for m in (eu, ei, bu, bi):
            torch.nn.init.normal_(m.weight, std=0.05)
        params = [*eu.parameters(), *ei.parameters(), *bu.parameters(), *bi.parameters()]
        opt = torch.optim.Adam(params, lr=0.05, weight_decay=1e-4)

        def score(sl):
            s = bu(u[sl]).squeeze(-1) + bi(i[sl]).squeeze(-1)
            return s + (eu(u[sl]) * ei(i[sl])).sum(-1) if dim else s

        for _ in range(150):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(score(slice(0, n_train)), y[:n_train])
            loss.backward()
            opt.step()
        with torch.no_grad():
            return _auc(y[n_train:].numpy(), score(slice(n_train, None)).numpy())

    assert fit(8) > fit(0) + 0.02
