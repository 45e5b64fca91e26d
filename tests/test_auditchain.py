"""The audit log's hash chain, anchor, erasure and retention, on a real SQLite log.

Tampering is done the way an attacker with the database file would: plain SQL on
``audit.db``. Each test says which protection catches it (a MAC, a link, the anchor).
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nbdeploy as nd
from nbdeploy import config
from nbdeploy.auditlog import (
    AuditLog,
    Record,
    chain,
    encode_inputs,
    encode_payload,
    shared,
)
from nbdeploy.auditlog.privacy import expire
from nbdeploy.cli import main

KEY = "correct horse battery staple"


@pytest.fixture
def keyed(home, monkeypatch):
    monkeypatch.setenv("NBDEPLOY_AUDIT_KEY", KEY)
    config.reset()
    return home


def _record(i: int, n: int = 3, *, columnar: bool = False, ts: float = 0.0) -> Record:
    names = ["age", "email"] if columnar else ["a", "b"]
    if columnar:
        inputs: object = {"age": np.arange(n) + i, "email": [f"p{i}.{j}@x.org" for j in range(n)]}
    else:
        inputs = np.random.default_rng(i).random((n, 2))
    return Record(
        request_id=f"req{i}",
        deployment="dep",
        model_name="m",
        model_version=1,
        alias="champion",
        role="served",
        n_rows=n,
        latency_ms=0.25 * i,
        payload=encode_payload({"columns": names, "predictions": np.arange(n) % 2}),
        inputs=encode_inputs(names, inputs),  # type: ignore[arg-type]
        ts=ts,
    )


def _fill(records: int = 6, *, columnar: bool = False) -> list[Record]:
    log = shared()
    written = [_record(i, columnar=columnar) for i in range(records)]
    log.append(written[: records // 2])
    log.append(written[records // 2 :])
    log.add_feedback("m", [written[0].prediction_ids()[1]], [1], "tester")
    log.add_alert((time.time(), "dep", "error_rate", "error_rate", ">", 0.05, 0.2, 60.0, "m: hi"))
    return written


def _sql(home: Path, *statements: str) -> None:
    with sqlite3.connect(home / "audit.db") as db:
        for statement in statements:
            db.execute(statement)


def _broken(report: nd.VerifyReport, text: str) -> None:
    assert report.ok is False
    assert any(text in str(b) for b in report.breaks), report.breaks


def test_an_untouched_log_verifies_every_table(keyed):
    _fill()
    shared().anchor()
    report = nd.verify()
    assert (report.ok, report.records, report.feedback, report.alerts) == (True, 6, 1, 1)
    assert report.breaks == () and report.unanchored == 0 and report.keyed
    assert report.summary().startswith("audit log holds: 6 records, 1 feedback, 1 alerts")
    assert "holds" in report._repr_html_()
    assert nd.verify("m").records == 6 and nd.verify("other").records == 0


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE records SET latency_ms = 9 WHERE seq = 3",
        "UPDATE records SET payload = payload || x'00' WHERE seq = 3",
        "UPDATE records SET inputs = (SELECT inputs FROM records WHERE seq = 4) WHERE seq = 3",
        "UPDATE feedback SET label = '0' WHERE seq = 1",
        "UPDATE alerts SET message = 'm: nothing happened' WHERE seq = 1",
    ],
    ids=["record field", "outputs", "inputs", "feedback label", "alert"],
)
def test_an_edited_entry_is_reported(keyed, edit):
    _fill()
    shared().anchor()
    _sql(keyed, edit)
    _broken(nd.verify(), "content does not match its hash")


def test_an_alerts_delivery_status_may_change(keyed):
    _fill()
    _sql(keyed, "UPDATE alerts SET webhook = 'sent (200)'")
    assert nd.verify().ok


def test_reordered_records_are_reported(keyed):
    _fill()
    _sql(
        keyed,
        "UPDATE records SET seq = -2 WHERE seq = 2",
        "UPDATE records SET seq = 2 WHERE seq = 3",
        "UPDATE records SET seq = 3 WHERE seq = -2",
    )
    _broken(nd.verify(), "link to the previous entry broken")


def test_a_deleted_record_in_the_middle_is_reported(keyed):
    _fill()
    _sql(keyed, "DELETE FROM records WHERE seq = 3")
    report = nd.verify()
    _broken(report, "records #4")
    assert report.records == 5


def test_deleted_newest_records_are_caught_by_the_anchor(keyed):
    _fill()
    shared().anchor()
    _sql(keyed, "DELETE FROM records WHERE seq >= 5", "DELETE FROM feedback")
    report = nd.verify()
    _broken(report, "the log ends at #4 but the anchor vouches for entries up to #6")
    _broken(report, "feedback #1")
    # and new records appended after the cut do not hide it: they take the cut numbers
    # again (max + 1), and the one that lands on the anchored number has another hash
    shared().append([_record(10)])
    _broken(nd.verify(), "the log ends at #5 but the anchor vouches for entries up to #6")
    shared().append([_record(11)])
    _broken(nd.verify(), "differs from the anchored hash")
    # nor does anchoring the new head: the anchor stays on the entry that was cut
    shared().append([_record(12)])
    shared().anchor()
    _broken(nd.verify(), "differs from the anchored hash")


def test_a_forged_appended_record_is_reported_when_keyed(keyed):
    _fill()
    shared().anchor()
    with sqlite3.connect(keyed / "audit.db") as db:  # recomputed as well as one can: no key
        prev = db.execute("SELECT hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()[0]
        forged = _record(99)
        body = chain.record_content(forged.fields(), forged.payload, forged.inputs)
        db.execute(
            "INSERT INTO records (record_id, request_id, ts, deployment, model_name, "
            "model_version, alias, role, n_rows, latency_ms, payload, inputs, prev_hash, hash) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (*forged.fields(), forged.payload, forged.inputs, prev,
             hashlib.sha256(prev.encode() + body).hexdigest()),
        )  # fmt: skip
    report = nd.verify()
    _broken(report, "written without the audit key")
    assert report.breaks[0].entry == forged.record_id


def test_without_a_key_a_forged_append_is_only_unanchored(home):
    """What the key buys: unkeyed, anyone can extend the chain, so records after the
    anchor can only be reported as not vouched for."""
    _fill()
    shared().anchor()
    log = AuditLog(maintained=False)
    log.append([_record(99)])  # what a forger could compute too
    report = nd.verify()
    assert report.ok and not report.keyed and report.unanchored == 1
    assert "not keyed" in report.summary()


def test_a_rehashed_rewrite_is_caught_by_the_anchor(home):
    """Unkeyed, an attacker can edit a record and re-hash every later one: every link
    holds again, but the anchored hash is no longer in the chain."""
    _fill()
    log = shared()
    log.anchor()
    _sql(home, "UPDATE records SET latency_ms = 9 WHERE seq = 2")
    rows = log.db.execute(
        "SELECT seq, record_id, request_id, ts, deployment, model_name, model_version, alias, "
        "role, n_rows, latency_ms, payload, inputs FROM records WHERE seq >= 2 ORDER BY seq"
    ).fetchall()
    prev = log.hash_before("records", 2)
    for seq, *fields, payload, inputs in rows:
        digest = hashlib.sha256(prev.encode() + chain.record_content(fields, payload, inputs))
        _sql(home, f"UPDATE records SET prev_hash = '{prev}', hash = '{digest.hexdigest()}' "
                   f"WHERE seq = {seq}")  # fmt: skip
        prev = digest.hexdigest()
    _broken(nd.verify(), "differs from the anchored hash")


def test_records_after_the_anchor_are_unanchored_not_broken(keyed):
    """What a crash leaves: the last records were committed, the anchor not yet moved."""
    _fill()
    shared().anchor()
    AuditLog(maintained=False).append([_record(7), _record(8)])
    report = nd.verify()
    assert report.ok and report.unanchored == 2
    assert "2 newer than the anchor" in report.summary()


def test_a_process_that_writes_anchors_within_seconds(keyed, monkeypatch):
    monkeypatch.setenv("NBDEPLOY_AUDIT_ANCHOR_S", "0.2")
    config.reset()
    _fill()
    deadline = time.monotonic() + 30
    while nd.verify().unanchored and time.monotonic() < deadline:
        time.sleep(0.1)
    assert nd.verify().unanchored == 0
    assert (keyed / "audit.anchor").exists()


def test_an_altered_or_foreign_anchor_is_reported(keyed, monkeypatch):
    _fill()
    shared().anchor()
    anchor = keyed / "audit.anchor"
    anchor.write_text(anchor.read_text().replace('"written"', '"written" ').replace("6,", "5,"))
    _broken(nd.verify(), "was altered")
    anchor.unlink()
    monkeypatch.setenv("NBDEPLOY_AUDIT_KEY", "another key")
    config.reset()
    report = nd.verify()
    _broken(report, "chained with another NBDEPLOY_AUDIT_KEY")
    assert len(report.breaks) == 1  # one clear line, not one per entry


def test_a_writer_with_another_key_is_refused(keyed, monkeypatch):
    _fill()
    monkeypatch.setenv("NBDEPLOY_AUDIT_KEY", "another key")
    config.reset()
    with pytest.raises(nd.AuditLogError, match="with another NBDEPLOY_AUDIT_KEY"):
        shared().append([_record(9)])
    monkeypatch.delenv("NBDEPLOY_AUDIT_KEY")
    config.reset()
    with pytest.raises(nd.AuditLogError, match="use the key it was started with"):
        shared().append([_record(9)])
    assert "set NBDEPLOY_AUDIT_KEY" in nd.verify().summary()


def test_the_key_can_come_from_a_file(home, monkeypatch, tmp_path):
    (tmp_path / "key").write_text(KEY + "\n")
    monkeypatch.setenv("NBDEPLOY_AUDIT_KEY_FILE", str(tmp_path / "key"))
    config.reset()
    _fill()
    monkeypatch.delenv("NBDEPLOY_AUDIT_KEY_FILE")
    monkeypatch.setenv("NBDEPLOY_AUDIT_KEY", KEY)
    config.reset()
    assert nd.verify().ok and nd.verify().keyed


def test_cli_exits_0_only_when_the_log_holds(keyed, capsys):
    _fill()
    assert main(["audit", "verify"]) == 0
    assert capsys.readouterr().out.startswith("audit log holds: 6 records")
    assert main(["audit", "verify", "--name", "m"]) == 0
    _sql(keyed, "DELETE FROM records WHERE seq = 2")
    assert main(["audit", "verify"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("audit log BROKEN: records #3") and "\n" not in err


@pytest.mark.parametrize("columnar", [False, True], ids=["matrix", "columns"])
def test_erasing_a_prediction_keeps_the_chain_and_the_other_rows(keyed, columnar):
    written = _fill(columnar=columnar)
    shared().anchor()
    before = nd.logs("m")
    target = written[2].prediction_ids()[1]
    assert nd.erase([target]) == 1
    assert nd.erase([target]) == 0  # erased once
    assert nd.verify().ok
    after = nd.logs("m")
    feature = "age" if columnar else "a"
    erased = after["prediction_id"] == target
    assert after.loc[erased, feature].isna().all()
    assert after.loc[~erased, feature].tolist() == before.loc[~erased, feature].tolist()
    assert after["prediction"].tolist() == before["prediction"].tolist()
    raw = shared().record(written[2].record_id)[-1]
    assert chain.erasures(raw).keys() == {1}
    if columnar:  # the value itself is gone from the stored bytes
        assert b"p2.1@x.org" not in raw and b"p2.0@x.org" in raw


def test_erasing_every_row_of_a_record_and_bad_ids(keyed):
    written = _fill()
    assert nd.erase(written[1].prediction_ids()) == 3
    assert nd.verify().ok
    assert nd.logs("m").iloc[3:6]["a"].isna().all()
    with pytest.raises(nd.AuditLogError, match="not in the audit log; nothing was erased"):
        nd.erase([written[3].prediction_ids()[0], "feedfeedfeedfeedfeed-0"])
    assert chain.erasures(shared().record(written[3].record_id)[-1]) == {}
    with pytest.raises(nd.AuditLogError, match="looks like"):
        nd.erase([written[3].record_id + "-²"])


def test_retention_erases_inputs_of_old_records_only(keyed, monkeypatch):
    monkeypatch.setenv("NBDEPLOY_RETENTION_DAYS", "30")
    config.reset()
    old = [_record(i, ts=time.time() - 40 * 86400) for i in range(3)]
    new = [_record(i + 3) for i in range(2)]
    shared().append(old + new)
    shared().anchor()
    assert expire() == 3
    assert expire() == 0
    frame = nd.logs("m")
    assert frame["a"].iloc[:9].isna().all() and frame["a"].iloc[9:].notna().all()
    assert "retention: older than 30 days" in str(
        chain.erasures(shared().record(old[0].record_id)[-1])
    )
    assert nd.verify().ok


@pytest.mark.parametrize("bad", ["-²", "-00", "-01", "-1.0", "- 1", "-", "-٣"])
def test_feedback_ids_are_ascii_digits_without_padding(keyed, bad):
    written = _fill()
    pid = written[0].record_id + bad
    with pytest.raises(nd.AuditLogError, match="looks like '<record>-<row>'"):
        nd.feedback("m", [pid], [1])
    assert nd.feedback("m", [written[0].record_id + "-2"], [0]) == 1


def test_a_flood_of_rejections_adds_counts_not_rows(home):
    log = shared()
    now = time.time()
    for _ in range(20):
        log.reject([(now, "dep", "m", "unauthorized", 401)] * 500)
    log.reject([(now, "dep", "m", "schema_violation", 422)] * 3)
    rows = log.db.execute("SELECT COUNT(*) FROM rejections").fetchone()[0]
    assert rows <= 4  # two codes, in at most two minutes
    assert log.counts("dep")["rejected"] == 10_003
    assert sorted((c, n) for _, c, _, n in log.rejections("dep", now - 60))[-1] == (
        "unauthorized",
        10_000,
    )


WRITER = """
import sys, numpy as np
from nbdeploy.auditlog import AuditLog, Record, encode_inputs, encode_payload
log = AuditLog()
for i in range(int(sys.argv[1])):
    log.append([Record(f"w{sys.argv[2]}-{i}", "dep", "m", 1, None, "served", 1, 0.1,
                       encode_payload({"columns": ["a"], "predictions": [i]}),
                       encode_inputs(["a"], np.array([[float(i)]])))])
"""


def test_several_processes_appending_keep_one_chain(keyed):
    shared().append([_record(0)])  # the log exists, chained with the key
    env = config.child_env(NBDEPLOY_AUDIT_KEY=KEY, PYTHONPATH=str(Path(nd.__file__).parents[1]))
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, "150", str(w)], env=env) for w in range(4)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    report = nd.verify()
    assert report.ok and report.records == 601
    assert report.unanchored == 0  # each writer anchored at its clean exit


def test_a_serving_log_keeps_its_wal_bounded(home, monkeypatch):
    """Under continuous commits the WAL is rewound and cut back to a quarter of
    NBDEPLOY_AUDIT_WAL_MAX_MB, instead of growing for as long as the load lasts."""
    from nbdeploy.auditlog.maintenance import wal_reset_bytes

    monkeypatch.setenv("NBDEPLOY_AUDIT_WAL_MAX_MB", "1")
    config.reset()
    log = AuditLog(background_checkpoints=True)
    wal = log.path.with_name("audit.db-wal")
    stats = log._maintenance.stats  # type: ignore[union-attr]
    # Commit until the maintenance thread has rewound the WAL at least once: about
    # 40 MB of frames without a bound. How long that takes depends on the machine (a
    # fast disk writes them all before the thread's first tick), so no fixed count.
    deadline = time.monotonic() + 60
    i = 0
    while i < 1500 or stats["caught_up"] + stats["restart"] == 0:
        assert time.monotonic() < deadline, stats
        log.append([_record(i, n=4)])
        if i % 100 == 99:
            log.append([_record(100_000 + i, n=4)])
        i += 1
    deadline = time.monotonic() + 30
    while wal.stat().st_size > wal_reset_bytes(config.settings()):
        assert time.monotonic() < deadline, (wal.stat().st_size, stats)
        log.append([_record(99_999)])  # a commit after a rewind cuts the file back
        time.sleep(0.3)
    assert nd.verify().ok


def test_a_restart_checkpoint_gives_way_to_a_long_read(home):
    """A reader holding an old snapshot (a monitor reading its window) keeps the WAL from
    being rewound; the RESTART checkpoint, which holds new writers while it waits, gives
    up after RESTART_WAIT_MS instead of the connection's whole busy timeout."""
    from nbdeploy.auditlog.store import RESTART_WAIT_MS

    log = AuditLog()
    log.append([_record(0)])
    reader = sqlite3.connect(log.path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 1  # snapshot
    log.append([_record(1)])  # a frame the reader's snapshot keeps in the WAL
    keeper = AuditLog(maintained=False, busy_timeout_s=30.0)
    started = time.monotonic()
    assert keeper.checkpoint(catch_up=True, force=True) == "busy"
    # not a speed check: before, it waited out the connection's 30 s, writers held
    assert time.monotonic() - started < 10
    # the connection's own busy timeout is back for everything else it does
    assert keeper.db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000 != RESTART_WAIT_MS
    reader.execute("COMMIT")
    assert keeper.checkpoint(catch_up=True, force=True) == "restart"
    reader.close()


def test_a_log_of_the_old_chain_format_is_refused_clearly(home):
    home.mkdir(parents=True)
    with sqlite3.connect(home / "audit.db") as db:
        db.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY, payload BLOB)")
    with pytest.raises(nd.AuditLogError, match=r"older nbdeploy .* move it aside"):
        AuditLog()
