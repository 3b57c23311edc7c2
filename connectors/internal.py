"""The internal-systems adapter: tasks, notes and brief attachments in fulfill's own database.

Each database write and its ledger row commit in ONE transaction, keyed unique on the step's
idempotency key, so a repeated call finds the first row instead of writing a second one.
Briefs are stored in two steps: the bytes in object storage (deterministic key, idempotent
PUT), then the attachment row; compensation deletes the object and voids the rows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from connectors.base import Connector, ExternalRef, ProviderRequest, StepCall, StepResult, validate_contract
from connectors.errors import NotFound, ProviderUnavailable, ValidationRejected
from fulfill import ledger
from fulfill.db import db_now, insert_ignore, transaction
from fulfill.storage import ObjectStore
from fulfill.tables import InternalAttachment, InternalNote, InternalTask

TABLES: dict[str, type[InternalTask | InternalNote | InternalAttachment]] = {
    "create_task": InternalTask,
    "log_note": InternalNote,
    "create_attachment": InternalAttachment,
}
OBJECT_NAMES = {"create_task": "task", "log_note": "note", "create_attachment": "attachment"}


def brief_object_key(call: StepCall) -> str:
    """Deterministic storage key of a brief: same intent step → same object."""
    digest = hashlib.sha256(call.idempotency_key.encode("utf-8")).hexdigest()[:24]
    slug = (
        re.sub(r"[^a-z0-9]+", "-", str(call.params.get("title", "brief")).lower()).strip("-")[:48] or "brief"
    )
    extension = "md" if call.params.get("content_type", "text/markdown") == "text/markdown" else "bin"
    return f"briefs/{call.tenant_id}/{call.action_intent_id}/{digest}-{slug}.{extension}"


class InternalConnector(Connector):
    """Fulfils ``internal.*`` actions against fulfill's database and object storage.

    Args:
        engine: The ledger database (internal records live beside the ledger).
        store: Object storage for briefs.
    """

    system = "internal"
    action_types = frozenset({"internal.create_task", "internal.log_note", "internal.attach_brief"})
    #: steps whose database write already appends its own STEP_SUCCEEDED ledger row
    self_ledgered_steps = frozenset({"create_task", "log_note", "create_attachment"})

    def __init__(self, engine: Engine, store: ObjectStore) -> None:
        self.engine = engine
        self.store = store

    def steps(self, action_type: str, params: Mapping[str, Any]) -> list[str]:
        """internal.create_task → create_task; log_note → log_note; attach_brief → store_brief, create_attachment."""
        return {
            "internal.create_task": ["create_task"],
            "internal.log_note": ["log_note"],
            "internal.attach_brief": ["store_brief", "create_attachment"],
        }[action_type]

    def validate(self, action_type: str, params: Mapping[str, Any]) -> None:
        """The contract schema is the whole rule set for internal records."""
        if action_type not in self.action_types:
            raise ValidationRejected(f"action_type: {action_type} is not an internal action")
        validate_contract(action_type, params)

    # -- execute -----------------------------------------------------------------------------
    def execute(self, call: StepCall) -> StepResult:
        """Write once per idempotency key; a repeat returns the first write."""
        if call.step == "store_brief":
            return self._store_brief(call)
        table = TABLES.get(call.step)
        if table is None:
            raise ValidationRejected(f"step: unknown internal step {call.step!r}")
        with transaction(self.engine) as session:
            now = db_now(session)
            values = self._insert_values(call) | {"created_at": now}
            inserted = insert_ignore(session, table, values)
            row = self._row(session, table, call.idempotency_key)
            assert row is not None
            if row.voided_at is not None:
                raise ValidationRejected(
                    f"idempotency_key {call.idempotency_key}: the record was voided by compensation",
                    seller_message="This record was undone earlier and will not be recreated with the same key.",
                )
            result = self._result(call, row, created=inserted)
            if inserted:
                ledger.append(
                    session,
                    tenant_id=call.tenant_id,
                    action_intent_id=call.action_intent_id,
                    event_type="STEP_SUCCEEDED",
                    details={
                        "step": call.step,
                        "attempts": 1,
                        "external_ref": result.ref.model_dump(mode="json"),
                        "created": True,
                        "summary": result.summary,
                        "idempotency_key": call.idempotency_key,
                    },
                )
        return result

    def describe(self, call: StepCall) -> list[ProviderRequest]:
        """The object PUT of ``store_brief`` or the one row a record step inserts. No I/O.

        The row holds the values :meth:`execute` writes (``created_at`` comes from the database clock).
        """
        if call.step == "store_brief":
            key = brief_object_key(call)
            data = str(call.params["content"]).encode("utf-8")
            return [
                ProviderRequest(
                    "PUT",
                    self.store.url(key),
                    "store the brief",
                    True,
                    body={
                        "object_key": key,
                        "size_bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                    },
                    note=f"{self.store.kind} object storage; the key is derived from the idempotency key",
                )
            ]
        table = TABLES.get(call.step)
        if table is None:
            raise ValidationRejected(f"step: unknown internal step {call.step!r}")
        return [
            ProviderRequest(
                "INSERT",
                f"internal://{table.__tablename__}",
                f"insert {OBJECT_NAMES[call.step]}",
                True,
                body=self._insert_values(call),
                note="one row, unique on idempotency_key, committed with its ledger row",
            )
        ]

    def planned_ref(self, call: StepCall) -> ExternalRef:
        """A brief's object key follows from the step's key; a row's id is the database's."""
        if call.step == "store_brief":
            key = brief_object_key(call)
            return ExternalRef(system="object_storage", object="brief", id=key, url=self.store.url(key))
        return super().planned_ref(call)

    def _insert_values(self, call: StepCall) -> dict[str, Any]:
        """The row a record step inserts, but its ``created_at``."""
        return self._values(call) | {
            "tenant_id": call.tenant_id,
            "account_id": call.account_id,
            "action_intent_id": call.action_intent_id,
            "idempotency_key": call.idempotency_key,
        }

    def _values(self, call: StepCall) -> dict[str, Any]:
        params = call.params
        if call.step == "create_task":
            return {
                "title": params["title"],
                "assignee": params.get("assignee"),
                "due_date": params.get("due_date"),
                "description": params.get("description"),
            }
        if call.step == "log_note":
            return {"title": params.get("title") or "", "body": params["body"]}
        stored = call.prior.get("store_brief")
        if stored is None:
            raise ValidationRejected("prior.store_brief: the brief must be stored before it is attached")
        data = params["content"].encode("utf-8")
        return {
            "title": params["title"],
            "content_type": params.get("content_type", "text/markdown"),
            "storage": self.store.kind,
            "object_key": stored.id,
            "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    @staticmethod
    def _row(
        session: Session, table: type[InternalTask | InternalNote | InternalAttachment], key: str
    ) -> InternalTask | InternalNote | InternalAttachment | None:
        row = session.exec(select(table).where(table.idempotency_key == key)).first()
        return row  # type: ignore[return-value]

    def _result(
        self, call: StepCall, row: InternalTask | InternalNote | InternalAttachment, *, created: bool
    ) -> StepResult:
        kind = OBJECT_NAMES[call.step]
        title = row.title or kind
        summaries = {
            "task": f"Created the internal task “{title}”.",
            "note": f"Logged the note “{title}” on the account."
            if row.title
            else "Logged a note on the account.",
            "attachment": f"Attached the brief “{title}” to the account.",
        }
        return StepResult(
            ref=ExternalRef(system="internal", object=kind, id=str(row.id), url=None),
            created=created,
            summary=summaries[kind],
        )

    def _store_brief(self, call: StepCall) -> StepResult:
        key = brief_object_key(call)
        data = call.params["content"].encode("utf-8")
        existed = self.store.get(key) == data
        try:
            if not existed:
                self.store.put(key, data, call.params.get("content_type", "text/markdown"))
        except OSError as exc:
            raise ProviderUnavailable(f"object storage write failed: {exc.__class__.__name__}") from None
        return StepResult(
            ref=ExternalRef(system="object_storage", object="brief", id=key, url=self.store.url(key)),
            created=not existed,
            undo={"object_key": key},
            summary=f"Stored the brief “{call.params['title']}” ({len(data)} bytes).",
        )

    # -- lookup / compensate -------------------------------------------------------------------
    def lookup(self, call: StepCall) -> StepResult | None:
        """Find the record (or object) an earlier attempt committed."""
        if call.step == "store_brief":
            key = brief_object_key(call)
            if self.store.get(key) is None:
                return None
            return StepResult(
                ref=ExternalRef(system="object_storage", object="brief", id=key, url=self.store.url(key)),
                created=False,
                undo={"object_key": key},
                summary=f"Stored the brief “{call.params['title']}”.",
            )
        table = TABLES[call.step]
        with transaction(self.engine) as session:
            row = self._row(session, table, call.idempotency_key)
            if row is None or row.voided_at is not None:
                return None
            return self._result(call, row, created=False)

    def compensate(self, call: StepCall, result: StepResult) -> None:
        """Delete the stored object, or void the row (idempotent)."""
        if call.step == "store_brief":
            self.store.delete(result.ref.id)
            return
        table = TABLES[call.step]
        with transaction(self.engine) as session:
            row = self._row(session, table, call.idempotency_key)
            if row is None:
                raise NotFound(f"{OBJECT_NAMES[call.step]} {result.ref.id} does not exist")
            if row.voided_at is None:
                row.voided_at = db_now(session)
                session.add(row)
