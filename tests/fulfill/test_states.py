"""The typed vocabularies: StrEnums that are exactly the contract's strings."""

from __future__ import annotations

import json
import pickle
import re
from enum import StrEnum
from pathlib import Path

import pytest

from connectors import errors
from fulfill.executions import AlreadyFinished, Failure, LeaseLost
from fulfill.states import (
    Compensation,
    ExecutionStatus,
    FailureCode,
    HaltKind,
    RefusalReason,
    StepStatus,
)

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "CONTRACT.md"
VOCABULARIES = [ExecutionStatus, FailureCode, Compensation, StepStatus, RefusalReason, HaltKind]


@pytest.mark.parametrize("enum", VOCABULARIES)
def test_every_member_is_its_own_name_as_a_plain_string(enum: type[StrEnum]) -> None:
    for member in enum:
        assert member == member.name == member.value
        assert hash(member) == hash(member.value), "a member finds a row's plain string in sets and dicts"
        assert type(str(member)) is str and str(member) == member.name
        assert json.dumps({"v": member}) == json.dumps({"v": member.name})
        assert pickle.loads(pickle.dumps(member)) is member


def _backticked_after(label: str, text: str) -> set[str]:
    sentence = text[text.index(label) :].split(".", 1)[0]
    return set(re.findall(r"`([A-Z_]+)`", sentence))


def test_the_vocabularies_are_the_contracts() -> None:
    text = CONTRACT.read_text(encoding="utf-8")
    assert set(ExecutionStatus) == _backticked_after("`status` is one of", text)
    assert set(FailureCode) - {FailureCode.CONFLICT} == _backticked_after("`code` is one of", text)
    assert set(Compensation) == {"NONE", "COMPENSATED", "COMPENSATION_FAILED"}


def _subclasses(cls: type[errors.ConnectorError]) -> list[type[errors.ConnectorError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


def test_every_connector_error_code_is_a_failure_code() -> None:
    classes = _subclasses(errors.ConnectorError)
    assert len(classes) > 5
    for cls in classes:
        assert FailureCode(cls.code) == cls.code, cls


def test_failure_as_dict_holds_plain_strings() -> None:
    failure = Failure(FailureCode.KILL_SWITCH, "Paused.", compensation=Compensation.COMPENSATED)
    as_dict = failure.as_dict()
    assert as_dict == {
        "code": "KILL_SWITCH",
        "message": "Paused.",
        "needs_human": False,
        "compensation": "COMPENSATED",
    }
    assert type(as_dict["code"]) is str and type(as_dict["compensation"]) is str


@pytest.mark.parametrize("kind", [LeaseLost, AlreadyFinished])
def test_state_exceptions_pickle_from_their_arguments(kind: type[LeaseLost | AlreadyFinished]) -> None:
    raised = kind(ExecutionStatus.CANCELLED)
    again = pickle.loads(pickle.dumps(raised))
    assert type(again) is kind and again.status is ExecutionStatus.CANCELLED
    assert str(again) == str(raised)
