"""hubspot-api-client (HubSpot's official Python client) keeps the emulator and the connector honest.

1. The official client drives the emulator, served on a real loopback port, through create / read /
   update / archive, search, property definitions, ``idProperty`` reads and the error cases: when the
   client and the emulator disagree, the emulator is wrong.
2. Every request the connector sends (a full run against the emulator: the check, searches, creates,
   reads by key, updates, archives) is rebuilt with the client's generated API classes and models:
   same method, path, query parameter names and body; the body round-trips through the model
   (``SimplePublicObjectInputForCreate``, ``PublicObjectSearchRequest``, …) unchanged, with only
   field names and types the model declares.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from hubspot import HubSpot  # type: ignore[import-untyped]
from hubspot.crm.deals import (  # type: ignore[import-untyped]
    SimplePublicObjectInputForCreate as DealInput,
)
from hubspot.crm.objects.tasks import (  # type: ignore[import-untyped]
    ApiException as TasksApiException,
)
from hubspot.crm.objects.tasks import (
    AssociationSpec,
    Filter,
    FilterGroup,
    PublicAssociationsForObject,
    PublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.properties import (  # type: ignore[import-untyped]
    ApiException as PropertiesApiException,
)

from connectors.base import ExternalRef, StepCall, idempotency_key
from connectors.hubspot import HubSpotConnector, forget_attempts
from sandbox.base import Fault
from sandbox.hubspot import KEY_PROPERTY, PRIVATE_APP_TOKEN, HubSpotEmulator
from tests.connectors.cases_hubspot import OPPORTUNITY_PARAMS, TASK_PARAMS, make_credentials


@pytest.fixture
def emulator() -> HubSpotEmulator:
    return HubSpotEmulator()


@pytest.fixture
def official(emulator: HubSpotEmulator) -> Iterator[HubSpot]:
    base = emulator.serve()
    try:
        yield HubSpot(access_token=PRIVATE_APP_TOKEN, host=base)
    finally:
        emulator.shutdown()


def _task_input(key: str) -> SimplePublicObjectInputForCreate:
    return SimplePublicObjectInputForCreate(
        properties={"hs_task_subject": "Call", "hs_timestamp": "2026-12-03T12:00:00Z", KEY_PROPERTY: key},
        associations=[
            PublicAssociationsForObject(
                to=PublicObjectId(id="1001"),
                types=[AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=192)],
            )
        ],
    )


# -- 1. the official client against the emulator ---------------------------------------------------
def test_task_create_read_update_archive(official: HubSpot, emulator: HubSpotEmulator) -> None:
    tasks = official.crm.objects.tasks.basic_api
    created = tasks.create(simple_public_object_input_for_create=_task_input("k-1"))
    assert created.id.isdigit() and created.properties[KEY_PROPERTY] == "k-1"
    assert emulator.associated("tasks", created.id) == [("companies", "1001", 192)]
    read = tasks.get_by_id(created.id, properties=["hs_task_subject", KEY_PROPERTY])  # repeated params
    assert read.properties["hs_task_subject"] == "Call" and read.properties[KEY_PROPERTY] == "k-1"
    updated = tasks.update(
        created.id,
        simple_public_object_input=SimplePublicObjectInput(properties={"hs_task_status": "COMPLETED"}),
    )
    assert updated.properties["hs_task_status"] == "COMPLETED"
    tasks.archive(created.id)
    with pytest.raises(TasksApiException) as gone:
        tasks.get_by_id(created.id)
    assert gone.value.status == 404 and json.loads(gone.value.body)["category"] == "OBJECT_NOT_FOUND"
    archived = tasks.get_by_id(created.id, archived=True)
    assert archived.archived is True


def test_search_sees_a_write_only_after_the_index_delay(official: HubSpot, emulator: HubSpotEmulator) -> None:
    now = [1_790_000_000.0]
    emulator._clock = lambda: now[0]
    emulator.index_delay = 5.0
    official.crm.objects.tasks.basic_api.create(simple_public_object_input_for_create=_task_input("k-2"))
    request = PublicObjectSearchRequest(
        filter_groups=[FilterGroup(filters=[Filter(property_name=KEY_PROPERTY, operator="EQ", value="k-2")])],
        properties=[KEY_PROPERTY],
        limit=10,
    )
    search = official.crm.objects.tasks.search_api
    assert search.do_search(public_object_search_request=request).total == 0
    now[0] += 5.0
    found = search.do_search(public_object_search_request=request)
    assert found.total == 1 and found.results[0].properties[KEY_PROPERTY] == "k-2"


def test_property_definitions_and_id_property(official: HubSpot) -> None:
    core = official.crm.properties.core_api
    task_key = core.get_by_name("tasks", KEY_PROPERTY)
    deal_key = core.get_by_name("deals", KEY_PROPERTY)
    assert task_key.has_unique_value is False and deal_key.has_unique_value is True
    currency = core.get_by_name("deals", "deal_currency_code")
    assert [o.value for o in currency.options] == ["USD", "EUR"]
    with pytest.raises(PropertiesApiException) as missing:
        core.get_by_name("tasks", "no_such_property")
    assert missing.value.status == 404
    deals = official.crm.deals.basic_api
    deal = deals.create(
        simple_public_object_input_for_create=DealInput(properties={"dealname": "Acme", KEY_PROPERTY: "d-1"})
    )
    by_key = deals.get_by_id("d-1", id_property=KEY_PROPERTY, properties=["dealname"])
    assert by_key.id == deal.id
    with pytest.raises(TasksApiException) as not_unique:
        official.crm.objects.tasks.basic_api.get_by_id("k-1", id_property=KEY_PROPERTY)
    assert not_unique.value.status == 400
    assert json.loads(not_unique.value.body)["category"] == "VALIDATION_ERROR"


def test_error_cases_in_hubspots_error_shape(official: HubSpot) -> None:
    tasks = official.crm.objects.tasks.basic_api
    with pytest.raises(TasksApiException) as unknown:
        tasks.create(
            simple_public_object_input_for_create=SimplePublicObjectInputForCreate(
                properties={"hs_timestamp": "2026-12-03T12:00:00Z", "colour": "red"}
            )
        )
    body = json.loads(unknown.value.body)
    assert unknown.value.status == 400 and body["category"] == "VALIDATION_ERROR"
    assert body["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    assert body["errors"][0]["context"]["propertyName"] == ["colour"]
    with pytest.raises(TasksApiException) as bad_association:
        bad = _task_input("k-3")
        bad.associations[0].types[0].association_type_id = 999
        tasks.create(simple_public_object_input_for_create=bad)
    assert bad_association.value.status == 400
    with pytest.raises(TasksApiException) as user_defined:
        bad = _task_input("k-4")
        bad.associations[0].types[0].association_category = "USER_DEFINED"
        tasks.create(simple_public_object_input_for_create=bad)
    assert user_defined.value.status == 400
    unauthorised = HubSpot(access_token="pat-na1-wrong", host=official.config["host"])
    with pytest.raises(TasksApiException) as denied:
        unauthorised.crm.objects.tasks.basic_api.get_page()
    assert denied.value.status == 401
    assert json.loads(denied.value.body)["category"] == "INVALID_AUTHENTICATION"


# -- 2. every request the connector sends, rebuilt with the client -----------------------------------
def _api(official: HubSpot, object_type: str, kind: str) -> Any:
    """The client's generated API class for one object type (``basic`` or ``search``)."""
    holders = {
        "companies": official.crm.companies,
        "deals": official.crm.deals,
        "contacts": official.crm.contacts,
        "tasks": official.crm.objects.tasks,
        "leads": official.crm.objects.leads,
    }
    return getattr(holders[object_type], f"{kind}_api")


def _captured(api: Any, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a generated method with the transport replaced; return what it would have sent."""
    seen: dict[str, Any] = {}

    def call_api(
        resource_path: str, http_method: str, path_params: Any, query_params: Any, *_: Any, **rest: Any
    ) -> None:
        path = resource_path
        for name, value in (path_params or {}).items():
            path = path.replace("{" + name + "}", quote(str(value), safe=""))
        seen.update(path=path, method=http_method, query=query_params or [], body=rest.get("body"))

    api.api_client.call_api = call_api
    getattr(api, method)(*args, **kwargs)
    return seen


def _model(api: Any, name: str, body: Any) -> Any:
    """``body`` as the client's model ``name`` (the client's own deserializer: enums, required, types)."""
    return api.api_client._ApiClient__deserialize(body, name)


def _conforms(api: Any, type_name: str, value: Any, where: str) -> None:
    """Field names and JSON types of ``value`` are those the generated model declares."""
    if type_name == "str":
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
    elif type_name == "int":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an int"
    elif type_name.startswith("list["):
        assert isinstance(value, list), f"{where}: not a list"
        for i, item in enumerate(value):
            _conforms(api, type_name[5:-1], item, f"{where}[{i}]")
    elif type_name.startswith(("dict(", "dict[")):
        assert isinstance(value, dict), f"{where}: not an object"
        inner = type_name[5:-1].split(", ", 1)[1]
        for key, item in value.items():
            _conforms(api, inner, item, f"{where}.{key}")
    else:
        models = __import__(api.__module__.rsplit(".api.", 1)[0] + ".models", fromlist=[type_name])
        cls = getattr(models, type_name)
        assert isinstance(value, dict), f"{where}: not an object"
        by_json = {v: k for k, v in cls.attribute_map.items()}
        unknown = set(value) - set(by_json)
        assert not unknown, f"{where}: {sorted(unknown)} are not fields of {type_name}"
        for key, item in value.items():
            _conforms(api, cls.openapi_types[by_json[key]], item, f"{where}.{key}")


def _rebuild(official: HubSpot, request: httpx.Request) -> dict[str, Any] | None:
    """The same request made with the official client, or None for an endpoint it does not cover."""
    path = request.url.path
    parts = path.strip("/").split("/")
    body = json.loads(request.content) if request.content else None
    query = {k: request.url.params.get_list(k) for k in request.url.params}
    properties = [p for v in query.get("properties", []) for p in v.split(",")] or None
    if parts[:3] == ["crm", "v3", "properties"]:
        core = official.crm.properties.core_api
        return _captured(core, "get_by_name", parts[3], parts[4])
    if parts[:3] != ["crm", "v3", "objects"]:
        return None
    object_type = parts[3]
    if request.method == "POST" and parts[-1] == "search":
        api = _api(official, object_type, "search")
        _conforms(api, "PublicObjectSearchRequest", body, "search body")
        model = _model(api, "PublicObjectSearchRequest", body)
        return _captured(api, "do_search", public_object_search_request=model)
    api = _api(official, object_type, "basic")
    if request.method == "POST":
        _conforms(api, "SimplePublicObjectInputForCreate", body, "create body")
        model = _model(api, "SimplePublicObjectInputForCreate", body)
        return _captured(api, "create", simple_public_object_input_for_create=model)
    if request.method == "GET" and len(parts) == 4:
        return _captured(api, "get_page", limit=int(query["limit"][0]), properties=properties)
    record_id = parts[4]
    record_id = unquote(record_id)
    if request.method == "GET":
        kwargs: dict[str, Any] = {"properties": properties}
        if "idProperty" in query:
            kwargs["id_property"] = query["idProperty"][0]
        return _captured(api, "get_by_id", record_id, **kwargs)
    if request.method == "PATCH":
        _conforms(api, "SimplePublicObjectInput", body, "update body")
        model = _model(api, "SimplePublicObjectInput", body)
        return _captured(api, "update", record_id, simple_public_object_input=model)
    if request.method == "DELETE":
        return _captured(api, "archive", record_id)
    raise AssertionError(f"the connector sent {request.method} {path}, which the client does not offer")


def _connector_run(emulator: HubSpotEmulator) -> list[httpx.Request]:
    """Every request a connector sends in a run through each step, a lost answer and undoing."""
    forget_attempts()
    hub = HubSpotConnector(httpx.Client(transport=emulator.transport()), make_credentials())
    prior: dict[str, ExternalRef] = {}
    calls: list[tuple[StepCall, Any]] = []
    plans = [
        ("crm.create_task", {**TASK_PARAMS, "related_to": {"object": "Contact", "id": "3001"}}),
        ("crm.create_opportunity", OPPORTUNITY_PARAMS),
        *[
            (
                "crm.update_field",
                {"object": o, "record_id": r, "field": f, "value": v, "previous_value": None},
            )
            for o, r, f, v in (
                ("Account", "1001", "industry", "Software"),
                ("Opportunity", "2001", "amount", 1200),
                ("Contact", "3001", "jobtitle", "CFO"),
                ("Lead", "4001", "hs_lead_label", "HOT"),
            )
        ],
    ]
    for n, (action_type, params) in enumerate(plans):
        prior = {}
        for step in hub.steps(action_type, params):
            call = StepCall(
                action_intent_id=f"ai_official_{n}",
                tenant_id="acme",
                account_id="1001",
                action_type=action_type,
                step=step,
                idempotency_key=idempotency_key(f"ai_official_{n}", step),
                params=params,
                prior=prior,
            )
            if step == "create_follow_up_task":
                emulator.inject(Fault(kind="drop", method="POST", path=r"^/crm/v3/objects/tasks$"))
                with pytest.raises(Exception, match="no answer"):
                    hub.execute(call)
                assert hub.lookup(call) is not None
            result = hub.execute(call)
            prior = {**prior, step: result.ref}
            calls.append((call, result))
    for call, result in reversed(calls):
        hub.compensate(call, result)
    return list(emulator.requests)


def test_every_request_the_connector_sends_is_one_the_official_client_builds(
    official: HubSpot, emulator: HubSpotEmulator
) -> None:
    sent = _connector_run(emulator)
    seen: set[tuple[str, str]] = set()
    for request in sent:
        rebuilt = _rebuild(official, request)
        if rebuilt is None:
            # Not in hubspot-api-client: GET /account-info/v3/details (checked against HubSpot's docs).
            assert (request.method, request.url.path) == ("GET", "/account-info/v3/details")
            continue
        where = f"{request.method} {request.url.path}"
        assert rebuilt["method"] == request.method, where
        assert rebuilt["path"] == request.url.raw_path.decode().split("?")[0], where
        names = {name for name, _ in rebuilt["query"]}
        assert names == set(request.url.params.keys()), f"{where}: query {sorted(names)}"
        if rebuilt["body"] is not None or request.content:
            client = official.crm.objects.tasks.basic_api.api_client
            assert client.sanitize_for_serialization(rebuilt["body"]) == json.loads(request.content), where
        seen.add((request.method, "/".join(request.url.path.split("/")[:5])))
    assert {
        ("POST", "/crm/v3/objects/tasks"),
        ("POST", "/crm/v3/objects/deals"),
        ("GET", "/crm/v3/properties/tasks"),
        ("PATCH", "/crm/v3/objects/leads"),
        ("DELETE", "/crm/v3/objects/tasks"),
    } <= seen
    assert any(r.url.path.endswith("/tasks/search") for r in sent), "the task search was sent and checked"
