from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.adapters.nats.wire import WireError, decode, encode, subject
from controlplane.application.envelope import Envelope


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "helm-service",
        "type": "sh.keptn.event.deployment.finished",
        "time": "2022-01-26T10:05:53.931Z",
        "datacontenttype": "application/json",
        "shkeptncontext": "ctx",
        "triggeredid": "t-1",
        "gitcommitid": "abc",
        "shkeptnspecversion": "0.2.4",
        "data": {"project": "p", "stage": "dev", "service": "svc", "result": "pass"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def raw(**overrides: Any) -> bytes:
    return json.dumps(body(**overrides)).encode()


def test_decodes_every_keptn_attribute() -> None:
    envelope = decode(raw())
    assert envelope == Envelope(
        id="e-1",
        source="helm-service",
        type="sh.keptn.event.deployment.finished",
        time="2022-01-26T10:05:53.931Z",
        data={"project": "p", "stage": "dev", "service": "svc", "result": "pass"},
        keptn_context="ctx",
        triggered_id="t-1",
        gitcommitid="abc",
        keptn_spec_version="0.2.4",
        datacontenttype="application/json",
        extensions={},
    )
    assert (envelope.project, envelope.stage, envelope.service) == ("p", "dev", "svc")


def test_accepts_str_and_bytearray() -> None:
    assert decode(raw().decode()) == decode(bytearray(raw())) == decode(raw())


def test_optional_attributes_get_defaults() -> None:
    envelope = decode(
        raw(
            time=...,
            datacontenttype=...,
            shkeptncontext=...,
            triggeredid=None,
            gitcommitid=...,
            shkeptnspecversion=...,
            data=...,
        )
    )
    assert envelope.time == ""
    assert envelope.data == {}
    assert envelope.keptn_context == ""
    assert envelope.triggered_id == ""
    assert envelope.keptn_spec_version == "0.2.4"
    assert envelope.datacontenttype == "application/json"


def test_null_data_is_empty() -> None:
    assert decode(raw(data=None)).data == {}


def test_keptn_contenttype_is_the_datacontenttype() -> None:
    envelope = decode(raw(datacontenttype=..., contenttype="application/cloudevents+json"))
    assert envelope.datacontenttype == "application/cloudevents+json"
    assert "contenttype" not in envelope.extensions


def test_unknown_attributes_are_kept_as_extensions() -> None:
    envelope = decode(raw(traceparent="00-abc-01", myext={"nested": [1, 2]}))
    assert envelope.extensions == {"traceparent": "00-abc-01", "myext": {"nested": [1, 2]}}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"id": "x",', "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"null", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (raw(id=...), "'id' is missing"),
        (raw(source=...), "'source' is missing"),
        (raw(type=...), "'type' is missing"),
        (raw(specversion=...), "'specversion' is missing"),
        (raw(specversion="0.3"), "'specversion' must be '1.0'"),
        (raw(specversion=1.0), "'specversion' must be '1.0'"),
        (raw(id=""), "'id' must not be empty"),
        (raw(id=42), "'id' must be a string"),
        (raw(type=["a"]), "'type' must be a string"),
        (raw(time=1700000000), "'time' must be a string"),
        (raw(data=[1, 2]), "'data' must be a JSON object"),
        (raw(data="text"), "'data' must be a JSON object"),
        (raw(data=3), "'data' must be a JSON object"),
        (raw(data=..., data_base64="AAEC"), "data_base64"),
    ],
)
def test_garbage_raises_wire_error(payload: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message) as caught:
        decode(payload)
    assert isinstance(caught.value, ValueError)


def test_several_problems_are_all_named() -> None:
    with pytest.raises(WireError) as caught:
        decode(b"{}")
    text = str(caught.value)
    for name in ("specversion", "id", "source", "type"):
        assert f"'{name}' is missing" in text


def test_encode_is_compact_structured_json_that_decodes_back() -> None:
    envelope = decode(raw(traceparent="00-abc-01"))
    encoded = encode(envelope)
    assert b" " not in encoded.replace(b"application/json", b"")
    document = json.loads(encoded)
    assert document["specversion"] == "1.0"
    assert document["traceparent"] == "00-abc-01"
    assert document["data"]["result"] == "pass"
    assert decode(encoded) == envelope


def test_encode_keeps_unicode() -> None:
    envelope = decode(raw(data={"message": "Grüße ✓"}))
    assert decode(encode(envelope)).data["message"] == "Grüße ✓"


def test_encode_rejects_data_json_cannot_hold() -> None:
    envelope = decode(raw()).evolve(data={"bad": object()})
    with pytest.raises(WireError, match="cannot be encoded"):
        encode(envelope)


def test_subject_is_the_full_type() -> None:
    envelope = decode(raw())
    assert subject(envelope) == "sh.keptn.event.deployment.finished"
    assert subject(envelope.evolve(type="dev.delivery.triggered")) == (
        "sh.keptn.event.dev.delivery.triggered"
    )
    assert subject(envelope.evolve(type="sh.keptn.log.error")) == "sh.keptn.log.error"


@pytest.mark.parametrize(
    "bad",
    [
        "sh.keptn.event.a b.triggered",
        "sh.keptn.event.*.triggered",
        "sh.keptn.event.>",
        "sh.keptn.event..triggered",
        "sh.keptn.event.x.triggered.",
        "sh.keptn.event.x\r\n.triggered",
    ],
)
def test_subject_rejects_what_nats_cannot_carry(bad: str) -> None:
    with pytest.raises(WireError, match="not a valid NATS subject"):
        subject(decode(raw()).evolve(type=bad))
