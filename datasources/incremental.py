"""Incremental, all-or-nothing ingest of a source into the canonical Delta log.

One call:

1. **Pick what to read.** Files whose fingerprint (size, mtime) is unchanged since the
   last ingest are not read, unless they hold a day that a changed file also holds
   (a day's content must be complete). Nothing changed: nothing is read.
2. **Read and check** every picked file in batches (:mod:`datasources.checks`), spilling
   the canonical rows per day to ``<log>.staging/`` beside the log (Arrow IPC): memory is one
   batch, then one day, whatever the file size.
3. **Decide the days.** Per day: duplicates handled (``checks.duplicates``), then a
   content fingerprint. Days new or whose fingerprint changed, and every later day (their
   ``hist_seq`` depends on earlier days), are written; earlier days are reused.
4. **Stage** each day's Parquet file inside the table folder (unreferenced, invisible),
   building ``hist_seq`` with a per-user state carried from the log's earlier days.
5. **One Delta commit** replaces all those days' partitions at once. Any error or kill
   before it leaves the log exactly as it was (staged files are deleted, or left
   unreferenced for vacuum); then the manifest (``_lfm4ads_ingest.json``) records the
   fingerprints.

``force`` (or a changed spec) rebuilds the whole log into a sibling folder and swaps it in
with two renames: a kill in between leaves no log, which the next run rebuilds.

The parts: the spill files (:mod:`datasources.day_spill`), the staged files, the one commit
and the swap (:mod:`datasources.log_commit`), the manifest (:mod:`datasources.ingest_manifest`).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from contracts import DatasetSpec
from contracts.dataset import (
    CANONICAL_SEQUENCE,
    IngestedFile,
    IngestManifest,
    IngestReport,
    IngestWarning,
)
from datasources.checks import (
    FILE_COL,
    ROW_COL,
    Findings,
    canonical_batch,
    day_fingerprint,
    dedupe,
)
from datasources.day_spill import DaySpill
from datasources.ingest_manifest import read_manifest, spec_changed, write_manifest
from datasources.log_commit import commit_days, remove_orphans, stage_day, swap_in
from datasources.log_store import canonical_schema
from datasources.sequences import SequenceState
from engines import delta_io

STAGING = ".staging"


@dataclass
class Input:
    """One thing to read: a file (with fingerprint) or an in-memory table (fingerprint None)."""

    name: str
    fingerprint: str | None
    batches: Callable[[], Iterator[pa.Table]]


def _read_inputs(
    inputs: list[Input], spec: DatasetSpec, spill: DaySpill, found: Findings, now_us: int, names: list[str]
) -> dict[str, set[str]]:
    """Check and spill every input; returns input name -> days it holds."""
    file_days: dict[str, set[str]] = {}
    for inp in inputs:
        idx = names.index(inp.name)
        offset, days = 0, set()
        for raw in inp.batches():
            days |= spill.add(canonical_batch(raw, spec, inp.name, offset, idx, found, now_us))
            offset += raw.num_rows
        file_days[inp.name] = days
    return file_days


def run_ingest(
    inputs: list[Input],
    spec: DatasetSpec,
    log_path: str | Path | None,
    *,
    source: str,
    force: bool = False,
    now: datetime | None = None,
) -> IngestReport:
    """Ingest ``inputs`` into the log at ``log_path`` (None: check only, write nothing)."""
    now = now or datetime.now(UTC)
    now_us = int(now.timestamp() * 1e6 + spec.checks.future_tolerance_hours * 3600e6)
    canon = spec.canonical()
    names = [i.name for i in inputs]
    report = IngestReport(source=source)
    log = Path(log_path) if log_path is not None else None
    man = read_manifest(log) if log is not None and not force else None
    rebuild = log is not None and (force or (delta_io.exists(log) and spec_changed(log, canon)))
    if man is not None and (rebuild or man.spec != canon.model_dump_json()):
        man = None
    if log is not None and not rebuild and delta_io.exists(log) and man is None and delta_io.list_days(log):
        rebuild = True  # a log without a manifest (an older version, a killed first run): start clean

    if log is not None:
        remove_orphans(log)
    to_read = inputs
    affected: set[str] | None = None  # None: every day read is complete
    if man is not None:
        changed = [
            i
            for i in inputs
            if i.fingerprint is None or man.files.get(i.name) is None or man.files[i.name].fingerprint != i.fingerprint
        ]
        removed = [n for n in man.files if n not in names]
        if not changed and not removed:  # nothing to read; still record that this run ingested nothing
            report.reused_days = sorted(man.days)
            report.log_version = man.log_version
            write_manifest(log, man.model_copy(update={"last": report}))
            return report
        affected = {d for n in [*(i.name for i in changed), *removed] if n in man.files for d in man.files[n].days}
        to_read = changed

    # beside the log, not in it: a failed first ingest leaves no log folder behind
    stage_root = (log.parent / f".{log.name}{STAGING}") if log is not None else None
    if stage_root is not None and stage_root.exists():
        shutil.rmtree(stage_root, ignore_errors=True)  # a killed run's leftovers (the run root is locked)
    tmp = tempfile.mkdtemp(prefix="lfm4ads-ingest-") if log is None else None
    spill = DaySpill(Path(tmp) if tmp else stage_root / uuid.uuid4().hex)
    found = Findings()
    staged: list[Path] = []
    target = log
    try:
        file_days = _read_inputs(to_read, spec, spill, found, now_us, names)
        if man is not None:
            affected |= set().union(*file_days.values()) if file_days else set()
            extra = [i for i in inputs if i not in to_read and set(man.files[i.name].days) & affected]
            file_days |= _read_inputs(extra, spec, spill, found, now_us, names)
        spill.close()
        report.files = len(file_days)
        report.rows = found.rows
        complete = [d for d in spill.days if affected is None or d in affected]
        report.days = spill.days
        if found.rows == 0 and man is None:
            from contracts import InputError

            raise InputError(f"{source}: no data rows")
        # per day: duplicates, fingerprint; what changed
        fps: dict[str, str] = {}
        dup_days: set[str] = set()
        for d in complete:
            raw_day = spill.read(d)
            day = dedupe(raw_day, spec, names, found)
            if day is not raw_day:
                dup_days.add(d)
            fps[d] = day_fingerprint(day)
            del raw_day, day
        _warnings(report, found, spec)
        old = man.days if man is not None else {}
        changed_days = sorted(d for d in complete if old.get(d) != fps[d])
        if log is None:
            return report
        if rebuild:
            target = log.parent / f".{log.name}.rebuild-{uuid.uuid4().hex[:8]}"
        have = [] if rebuild else delta_io.list_days(target)
        write_days = sorted({d for d in [*have, *complete] if changed_days and d >= changed_days[0]})
        files_entry = {
            n: IngestedFile(fingerprint=i.fingerprint or "", days=sorted(file_days.get(n, set())))
            for n, i in ((i.name, i) for i in inputs)
            if n in file_days
        }
        if man is not None:
            files_entry = {**{n: f for n, f in man.files.items() if n in names}, **files_entry}
        if not write_days:
            report.reused_days = sorted(have)
            version = delta_io.open_table(target).version()
        else:
            schema = canonical_schema(spec)
            state = SequenceState(spec)
            if not spec.sequence.column:
                seq_cols = ["user_id", "event_time", state.item_col, *([state.task] if state.task else [])]
                for d in (x for x in have if x < write_days[0]):
                    state.advance(delta_io.read_days(target, [d], list(dict.fromkeys(seq_cols))))
            rows = 0
            adds = []
            for d in write_days:
                if d in fps:
                    day = spill.read(d)
                    if d in dup_days:
                        day = dedupe(day, spec, names, Findings())
                    day = day.drop_columns([FILE_COL, ROW_COL])
                else:  # unchanged in the source, rewritten for its sequences: from the log itself
                    day = delta_io.read_days(target, [d]).drop_columns([CANONICAL_SEQUENCE])
                if not spec.sequence.column:
                    day = day.append_column(CANONICAL_SEQUENCE, state.day_sequences(day))
                day = day.select(schema.names).cast(schema)
                path, add = stage_day(target, day, d)
                staged.append(path)
                adds.append(add)
                rows += day.num_rows
            version = commit_days(target, adds, write_days, schema, canon)
            report.ingested_days = write_days
            report.reused_days = sorted(set(have) - set(write_days))
            report.rows_written = rows
        report.log_version = version
        all_fps = {**{d: f for d, f in old.items()}, **fps}
        write_manifest(
            target,
            IngestManifest(
                source=source,
                spec=canon.model_dump_json(),
                files=files_entry,
                days=all_fps,
                log_version=version,
                last=report,
            ),
        )
        staged.clear()
        if rebuild:
            swap_in(target, log)
        return report
    except BaseException:
        for p in staged:  # never committed: remove now (a kill leaves them unreferenced for vacuum)
            p.unlink(missing_ok=True)
        if rebuild and target is not None and target != log:
            shutil.rmtree(target, ignore_errors=True)
        raise
    finally:
        spill.close()
        shutil.rmtree(tmp or spill.folder, ignore_errors=True)
        if stage_root is not None:
            shutil.rmtree(stage_root, ignore_errors=True)


def _warnings(report: IngestReport, found: Findings, spec: DatasetSpec) -> None:
    if found.duplicates:
        report.warnings.append(
            IngestWarning(
                check="duplicates",
                count=found.duplicates,
                message=f"{found.duplicates} exact duplicate row(s) dropped (first: {found.first_duplicate}); "
                f"checks.duplicates: fail to refuse them",
            )
        )
    if found.future:
        what = "dropped" if spec.checks.future_events == "drop" else "kept"
        report.warnings.append(
            IngestWarning(
                check="future_events",
                count=found.future,
                message=f"{found.future} row(s) in the future {what} (first: {found.first_future})",
            )
        )
