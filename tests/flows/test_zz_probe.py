from __future__ import annotations

import pytest

from flows.execute_intent import ExecutionFailed, execute_intent
from fulfill.sandbox.base import Fault
from fulfill.service import ExecutionService
from tests.flows.test_connectors_end_to_end import *  # noqa
from tests.flows.test_connectors_end_to_end import block_names, configured, fresh_emulators, sandbox  # noqa

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.mark.parametrize(
    "crm,acct,path", [("salesforce", SF_ACCOUNT, SF_TASK), ("hubspot", HS_COMPANY, HS_TASKS)]
)
def test_all_attempts_dropped(engine, make_intent, tenant, sandbox, configured, crm, acct, path):
    configured(crm)
    inject(sandbox, crm, Fault(kind="drop", method=path[0], path=path[1], times=10))
    intent = make_intent("crm.create_task", TASK, account_id=acct)
    try:
        r = execute_intent(intent)
        print("RESULT", r)
    except ExecutionFailed as e:
        print("FAILED", e)
    print("OBJECTS", objects_of_intent(sandbox, crm, intent["action_intent_id"]))
    print("EVENTS", events(engine, tenant, intent["action_intent_id"]))
    print(
        "STATUS",
        ExecutionService(engine).get_execution_status(intent["action_intent_id"], tenant).model_dump(),
    )


def test_timeout_fault(engine, make_intent, tenant, sandbox, configured):
    configured("hubspot")
    inject(sandbox, "hubspot", Fault(kind="timeout", method="POST", path=HS_TASKS[1], delay=0.2))
    intent = make_intent("crm.create_task", TASK, account_id=HS_COMPANY)
    r = execute_intent(intent)
    print("RESULT", r)
    print("OBJECTS", objects_of_intent(sandbox, "hubspot", intent["action_intent_id"]))


def test_compensation_dropped(engine, make_intent, tenant, sandbox, configured):
    configured("salesforce")
    sandbox.salesforce.add_validation_rule("Task", "Subject", "[x]", "nope")
    inject(sandbox, "salesforce", Fault(kind="drop", method="DELETE", path="/sobjects/Opportunity/"))
    intent = make_intent("crm.create_opportunity", {**OPPORTUNITY, "follow_up_task": {"subject": "s [x]"}})
    try:
        execute_intent(intent)
    except ExecutionFailed as e:
        print("FAILED", e)
    print("OBJECTS", objects_of_intent(sandbox, "salesforce", intent["action_intent_id"]))
    print(
        "STATUS",
        ExecutionService(engine).get_execution_status(intent["action_intent_id"], tenant).model_dump(),
    )
