"""The values a step of an action is made of: its call, its result and where its effect lives.

Domain types, shared by the execution state machine (which persists them), the connectors (which
perform them) and the surfaces (which show them). One versioned input object per step, Temporal-style.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ExternalRef(BaseModel):
    """Where an effect lives in the external (or internal) system."""

    model_config = ConfigDict(frozen=True)

    system: str = Field(description="salesforce, hubspot, google_calendar, internal, object_storage")
    object: str = Field(description="Provider object type, e.g. Task, Opportunity, deal, event")
    id: str = Field(description="Provider id of the object")
    url: str | None = Field(default=None, description="A link a person can open, when there is one")


class StepCall(BaseModel):
    """Everything one step needs. Versioned so persisted calls stay readable."""

    model_config = ConfigDict(frozen=True)

    version: Literal[1] = 1
    action_intent_id: str
    tenant_id: str
    account_id: str
    action_type: str
    step: str
    idempotency_key: str = Field(
        description="Deterministic per (intent, step, generation); reused on retries"
    )
    params: dict[str, Any]
    prior: dict[str, ExternalRef] = Field(
        default_factory=dict, description="Results of earlier steps of the same action, by step name"
    )
    attempt: int = Field(
        default=1,
        ge=1,
        description="Which attempt of this step this is, counted in the database across processes and "
        "runs (1: no earlier attempt can have reached the provider)",
    )


class StepResult(BaseModel):
    """What a committed step produced, persisted so it can be shown and compensated."""

    ref: ExternalRef
    created: bool = Field(description="False when an earlier attempt's write was found and reused")
    undo: dict[str, Any] = Field(
        default_factory=dict, description="What compensate() needs, e.g. the value before an update"
    )
    summary: str = Field(description="Seller-readable sentence, e.g. 'Created the task “X” in Salesforce.'")


def idempotency_key(action_intent_id: str, step: str, generation: int = 0) -> str:
    """The deterministic key of one step.

    Generation 0 is ``"{intent}:{step}"``; after a compensated failure a rerun uses a new
    generation so it does not find the objects it deliberately undid.
    """
    base = f"{action_intent_id}:{step}"
    return base if generation == 0 else f"{base}:g{generation}"
