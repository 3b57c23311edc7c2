"""What every CRM connector shares: the ``crm.*`` action types, their plans and their validation.

Plans (one idempotency key per step), the same for every CRM::

    crm.create_task          -> ["create_task"]
    crm.update_field         -> ["update_field"]
    crm.create_opportunity   -> ["create_opportunity"] (+ ["create_follow_up_task"] with follow_up_task)

:meth:`CrmConnector.validate` checks, in this order and without any I/O:

1. the contract schema (:func:`connectors.base.validate_contract`: required fields, types, lengths,
   dates, the priority literal, unknown keys);
2. rules every CRM needs that the schema does not state: required text is not blank, and numbers
   (``amount``, ``value``, ``previous_value``) are finite;
3. the provider's own rules, in :meth:`CrmConnector._validate_provider` (record id and field name
   formats, provider length limits, …).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base import Connector, StepCall, validate_contract
from connectors.errors import ValidationRejected

CREATE_TASK = "crm.create_task"
UPDATE_FIELD = "crm.update_field"
CREATE_OPPORTUNITY = "crm.create_opportunity"

STEP_CREATE_TASK = "create_task"
STEP_UPDATE_FIELD = "update_field"
STEP_CREATE_OPPORTUNITY = "create_opportunity"
STEP_CREATE_FOLLOW_UP_TASK = "create_follow_up_task"

#: The steps each action type may run; :meth:`CrmConnector.steps` gives the plan and its order.
STEPS: dict[str, frozenset[str]] = {
    CREATE_TASK: frozenset({STEP_CREATE_TASK}),
    UPDATE_FIELD: frozenset({STEP_UPDATE_FIELD}),
    CREATE_OPPORTUNITY: frozenset({STEP_CREATE_OPPORTUNITY, STEP_CREATE_FOLLOW_UP_TASK}),
}

# Required text the contract only asks to be non-empty; a CRM record needs more than blanks.
_FILLED_TEXT: dict[str, tuple[str, ...]] = {
    CREATE_TASK: ("subject",),
    UPDATE_FIELD: (),
    CREATE_OPPORTUNITY: ("name", "stage"),
}
# Numbers the contract types as int/float, which would let inf and nan through.
_FINITE_NUMBERS: dict[str, tuple[str, ...]] = {
    CREATE_TASK: (),
    UPDATE_FIELD: ("value", "previous_value"),
    CREATE_OPPORTUNITY: ("amount",),
}


class CrmConnector(Connector):
    """Base of the CRM connectors: the three ``crm.*`` action types, their plans and checks.

    Subclasses set :attr:`provider` (the name used in messages) and implement
    :meth:`_validate_provider` plus the I/O methods of :class:`Connector`.
    """

    action_types: ClassVar[frozenset[str]] = frozenset(STEPS)
    provider: ClassVar[str]
    """The provider's name as a person writes it, e.g. ``Salesforce``."""

    # -- plan and validation ---------------------------------------------------------------
    def steps(self, action_type: str, params: Mapping[str, Any]) -> list[str]:
        """The step names of ``action_type``; a follow-up task adds a second step to an opportunity."""
        self._require_action(action_type)
        if action_type == CREATE_TASK:
            return [STEP_CREATE_TASK]
        if action_type == UPDATE_FIELD:
            return [STEP_UPDATE_FIELD]
        plan = [STEP_CREATE_OPPORTUNITY]
        if params.get("follow_up_task"):
            plan.append(STEP_CREATE_FOLLOW_UP_TASK)
        return plan

    def validate(self, action_type: str, params: Mapping[str, Any]) -> None:
        """Check parameters against the contract, the CRM-wide rules and the provider's rules; no I/O.

        Raises:
            ValidationRejected: naming the field, e.g. ``parameters.subject: …``.
        """
        self._require_action(action_type)
        validate_contract(action_type, params)
        for name in _FILLED_TEXT[action_type]:
            _require_filled(params, name, "parameters")
        follow_up = params.get("follow_up_task")  # the contract allows it on opportunities only
        if isinstance(follow_up, Mapping):
            _require_filled(follow_up, "subject", "parameters.follow_up_task")
        for name in _FINITE_NUMBERS[action_type]:
            value = params.get(name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValidationRejected(f"parameters.{name}: must be a finite number")
        self._validate_provider(action_type, params)

    @abstractmethod
    def _validate_provider(self, action_type: str, params: Mapping[str, Any]) -> None:
        """Provider rules beyond the contract, run on parameters that already satisfy it. Pure.

        Raises:
            ValidationRejected: naming the field.
        """

    # -- guards ----------------------------------------------------------------------------
    def _require_action(self, action_type: str) -> None:
        if action_type not in self.action_types:
            raise ValidationRejected(f"action_type: {action_type!r} is not handled by {self.provider}")

    def _require_step(self, call: StepCall) -> str:
        """``call.step``, after checking that it belongs to ``call.action_type``."""
        self._require_action(call.action_type)
        if call.step not in STEPS[call.action_type]:
            raise ValidationRejected(f"step: {call.step!r} is not a step of {call.action_type}")
        return call.step


def _require_filled(params: Mapping[str, Any], name: str, prefix: str) -> None:
    value = params.get(name)
    if isinstance(value, str) and not value.strip():
        raise ValidationRejected(f"{prefix}.{name}: must be a non-empty string")
