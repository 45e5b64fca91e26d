"""``nd.verify``: does the whole log hold? And ``nd.audit``'s check of one record.

Both read entries through the store and check them with :mod:`.chain` and the anchor
(:mod:`.anchor`), so they work the same on any backend.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from nbdeploy.auditlog import anchor as anchors
from nbdeploy.auditlog.chain import TABLES, Break, walk
from nbdeploy.auditlog.store import AuditLog, shared


@dataclass(frozen=True)
class VerifyReport:
    """What ``nd.verify`` found: ``ok`` is False only when something is broken."""

    ok: bool
    #: Prediction records checked (of ``name`` when given).
    records: int
    #: Every place where the log does not hold, first ones first.
    breaks: tuple[Break, ...]
    #: Entries newer than the anchor (e.g. written in the seconds before a crash):
    #: intact, but not vouched for by the anchor.
    unanchored: int
    feedback: int = 0
    alerts: int = 0
    #: The chain is keyed with ``NBDEPLOY_AUDIT_KEY`` (forgeries are detectable).
    keyed: bool = False
    #: When the anchor was last written (epoch seconds), None without an anchor.
    anchored_at: float | None = None
    name: str | None = None

    def summary(self) -> str:
        """One line: what was checked and whether it holds."""
        what = f"{self.records} records, {self.feedback} feedback, {self.alerts} alerts" + (
            f" of {self.name}" if self.name else ""
        )
        if not self.ok:
            more = f" (and {len(self.breaks) - 1} more)" if len(self.breaks) > 1 else ""
            return f"audit log BROKEN: {self.breaks[0]}{more}; checked {what}"
        notes = [
            "keyed" if self.keyed else "not keyed (set NBDEPLOY_AUDIT_KEY to detect forgeries)"
        ]
        if self.unanchored:
            notes.append(f"{self.unanchored} newer than the anchor")
        return f"audit log holds: {what} verified; {'; '.join(notes)}"

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        color = "#1a7f37" if self.ok else "#cf222e"
        items = "".join(f"<li>{html.escape(str(b))}</li>" for b in self.breaks[:20])
        more = f"<li>... {len(self.breaks) - 20} more</li>" if len(self.breaks) > 20 else ""
        return (
            f'<div><b style="color:{color}">{html.escape(self.summary())}</b>'
            + (f"<ul>{items}{more}</ul>" if items else "")
            + "</div>"
        )


def _key_problem(log: AuditLog) -> str | None:
    stored = log.key_id()
    if stored is None or stored == log.chain.key_id:
        return None
    if not log.chain.key_id:
        return "the log is keyed: set NBDEPLOY_AUDIT_KEY (or _FILE) to verify it"
    return "the log is chained " + (
        "with another NBDEPLOY_AUDIT_KEY" if stored else "without NBDEPLOY_AUDIT_KEY"
    )


def verify(name: str | None = None, *, log: AuditLog | None = None) -> VerifyReport:
    """Check every prediction record, feedback label and alert of the log.

    Reports edited, reordered, deleted and (with ``NBDEPLOY_AUDIT_KEY``) forged entries,
    and, through the anchor, deleted newest entries. ``name`` (a model or deployment)
    counts only its entries and the breaks from its first one on. ``log``: another log
    than this home's (``nbdeploy audit migrate`` checks both sides).
    """
    log = log or shared()
    breaks: list[Break] = []
    problem = _key_problem(log)
    if problem:
        breaks.append(Break("log", 0, "", problem))
        return VerifyReport(False, 0, tuple(breaks), 0, keyed=log.chain.keyed, name=name)
    anchor, problem = anchors.read(log.anchor_path, log.chain)
    if problem:
        breaks.append(Break("anchor", 0, "", problem))

    def belongs(owner: str) -> bool:
        return name in owner.split("\x00")

    counts, unanchored = {}, 0
    for table in TABLES:
        heads = anchor.heads.get(table) if anchor else None
        check = walk(
            table, log.entries(table), log.chain, heads, belongs=None if name is None else belongs
        )
        breaks.extend(check.breaks)
        counts[table] = check.entries
        unanchored += check.unanchored
    return VerifyReport(
        ok=not breaks,
        records=counts["records"],
        breaks=tuple(breaks),
        unanchored=unanchored,
        feedback=counts["feedback"],
        alerts=counts["alerts"],
        keyed=log.chain.keyed,
        anchored_at=anchor.written if anchor else None,
        name=name,
    )


def record_holds(log: AuditLog, record_id: str) -> bool:
    """Does the chain vouch for one record (``nd.audit``'s ``verified``)?

    Keyed, nobody can re-hash an edit, so the record's own MAC, its link to the
    previous entry and the anchor decide. Unkeyed, a rewrite could re-hash everything after
    the record, so the walk goes from it to the newest entry (and the anchor).
    """
    link = log.record_link(record_id)
    if link is None or _key_problem(log):
        return False
    seq, _ = link
    anchor, problem = anchors.read(log.anchor_path, log.chain)
    if problem:
        return False
    anchored = anchor.heads.get("records") if anchor else None
    prev = log.hash_before("records", seq)
    if not log.chain.keyed:
        return not walk("records", log.entries("records", seq - 1), log.chain, anchored,
                        prev=prev).breaks  # fmt: skip
    own = next(log.entries("records", seq - 1))
    if walk("records", [own], log.chain, None, prev=prev).breaks:
        return False
    # the anchored entry still there, unchanged: no tail was cut, nothing re-hashed
    return anchored is None or log.entry_hash("records", anchored[0]) == anchored[1]


def record_breaks(log: AuditLog, record_id: str) -> list[str]:
    """Records from ``record_id`` to the newest whose chain does not hold (the audit
    notebook's integrity table)."""
    link = log.record_link(record_id)
    if link is None:
        return [record_id]
    problem = _key_problem(log)
    if problem:
        return [problem]
    anchor, problem = anchors.read(log.anchor_path, log.chain)
    anchored = anchor.heads.get("records") if anchor else None
    seq = link[0]
    check = walk("records", log.entries("records", seq - 1), log.chain, anchored,
                 prev=log.hash_before("records", seq))  # fmt: skip
    return ([problem] if problem else []) + [b.entry or f"#{b.seq}" for b in check.breaks]
