"""Prefect automations, declared in code: operators hear about what needs them.

Each automation sends one notification through a ``CustomWebhookNotificationBlock`` that POSTs
``{"subject", "body"}`` as JSON to an operator-configured URL (Slack/Teams/PagerDuty bridges accept
that, or point it at any receiver). :func:`ensure_automations` saves the block and creates — or
replaces, by name — the automations, so running it again after a change is safe::

    python -m deployments.automations https://hooks.example.com/fulfill-operators

=============================================  =====================================================
``fulfill: execution failed``                    an ``execute-intent`` run ended Failed
``fulfill: retries exhausted``                   a signal ``fulfill.action.failed`` with reason
                                                 ``RETRIES_EXHAUSTED`` (the provider kept failing)
``fulfill: ambiguous outcome``                   reason ``AMBIGUOUS_OUTCOME``: a person must check
``fulfill: failure rate``                        ``FAILURE_RATE_THRESHOLD`` failed actions within
                                                 ``FAILURE_RATE_WITHIN`` (an anomaly: a provider or
                                                 credential is down, or something upstream is wrong)
=============================================  =====================================================

The signal-based ones fire when ``deliver-signals`` emits the outcome event (every 30 s), with the
resource labels ``fulfill.reason`` / ``fulfill.status`` / ``fulfill.action-type`` it sets.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any, cast
from uuid import UUID

from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

BLOCK_NAME = "fulfill-operator-webhook"
FAILURE_RATE_THRESHOLD = 10
FAILURE_RATE_WITHIN = timedelta(minutes=5)
NAMES = (
    "fulfill: execution failed",
    "fulfill: retries exhausted",
    "fulfill: ambiguous outcome",
    "fulfill: failure rate",
)


def notification_block(url: str, block_name: str = BLOCK_NAME) -> UUID:
    """Save the operator webhook block (JSON ``{"subject", "body"}``); returns its document id."""
    block = CustomWebhookNotificationBlock(
        name="fulfill operators",
        url=url,
        method="POST",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    )
    block_id = block.save(block_name, overwrite=True)
    return UUID(str(block_id))


def _failed_signal(reason: str) -> EventTrigger:
    return EventTrigger(
        expect={"fulfill.action.failed"},
        match={"prefect.resource.id": "fulfill.intent.*", "fulfill.reason": reason},
        posture=Posture.Reactive,
        threshold=1,
        within=timedelta(0),
    )


def automations(block_id: UUID) -> list[Automation]:
    """The automations, unsaved (their names are :data:`NAMES`)."""

    def notify(subject: str, body: str) -> list[Any]:
        return [SendNotification(block_document_id=block_id, subject=subject, body=body)]

    intent = "{{ event.resource.id }} ({{ event.resource['fulfill.action-type'] }}, tenant {{ event.resource['fulfill.tenant'] }})"
    return [
        Automation(
            name=NAMES[0],
            description="An execute-intent run ended Failed.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Failed"},
                match_related={"prefect.resource.role": "flow", "prefect.resource.name": "execute-intent"},
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=notify(
                "fulfill: an execution failed",
                "Flow run {{ flow_run.name }} of execute-intent failed: {{ flow_run.state.message }}",
            ),
        ),
        Automation(
            name=NAMES[1],
            description="A provider kept failing until the retries ran out.",
            trigger=_failed_signal("RETRIES_EXHAUSTED"),
            actions=notify("fulfill: retries exhausted", f"{intent} failed after its retries ran out."),
        ),
        Automation(
            name=NAMES[2],
            description="An outcome is unknown: a person must check the provider.",
            trigger=_failed_signal("AMBIGUOUS_OUTCOME"),
            actions=notify(
                "fulfill: ambiguous outcome", f"{intent}: the outcome is unknown; a person must check."
            ),
        ),
        Automation(
            name=NAMES[3],
            description=f"{FAILURE_RATE_THRESHOLD} failed actions within {FAILURE_RATE_WITHIN}.",
            trigger=EventTrigger(
                expect={"fulfill.action.failed"},
                match={"prefect.resource.id": "fulfill.intent.*"},
                posture=Posture.Reactive,
                threshold=FAILURE_RATE_THRESHOLD,
                within=FAILURE_RATE_WITHIN,
            ),
            actions=notify(
                "fulfill: failure rate",
                f"At least {FAILURE_RATE_THRESHOLD} actions failed within {FAILURE_RATE_WITHIN}.",
            ),
        ),
    ]


def ensure_automations(url: str, block_name: str = BLOCK_NAME) -> list[Automation]:
    """Save the notification block and (re)create every automation by name; returns them as saved."""
    block_id = notification_block(url, block_name)
    saved = []
    for automation in automations(block_id):
        _delete_named(automation.name)
        saved.append(cast(Automation, automation.create()))
    return saved


def _delete_named(name: str) -> None:
    while True:
        try:
            cast(Automation, Automation.read(name=name)).delete()
        except ValueError:  # none (left) by that name
            return


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m deployments.automations OPERATOR_WEBHOOK_URL")
    for automation in ensure_automations(argv[0]):
        print(f"{automation.id} {automation.name}")


if __name__ == "__main__":
    main(sys.argv[1:])
