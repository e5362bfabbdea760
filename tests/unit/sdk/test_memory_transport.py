from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tasksdk.transports.memory import MemoryTransport, subject_matches


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b.c", "a.b.c", True),
        ("a.b.c", "a.b", False),
        ("a.*.c", "a.x.c", True),
        ("a.*", "a.x.c", False),
        ("a.>", "a.x.c", True),
        ("a.>", "a", False),
        ("sh.keptn.event.*.triggered", "sh.keptn.event.test.triggered", True),
        ("sh.keptn.event.test.>", "sh.keptn.event.test.status.changed", True),
    ],
)
def test_subject_matching(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


async def test_queue_group_members_share_messages_and_groups_each_get_a_copy() -> None:
    transport = MemoryTransport()
    received: dict[str, list[bytes]] = {"a1": [], "a2": [], "b": [], "plain1": [], "plain2": []}

    def collector(name: str) -> Callable[[bytes], Awaitable[None]]:
        async def handler(payload: bytes) -> None:
            received[name].append(payload)

        return handler

    await transport.subscribe("s.>", queue="a", handler=collector("a1"))
    await transport.subscribe("s.>", queue="a", handler=collector("a2"))
    await transport.subscribe("s.x", queue="b", handler=collector("b"))
    await transport.subscribe("s.x", queue="", handler=collector("plain1"))
    await transport.subscribe("s.x", queue="", handler=collector("plain2"))

    for n in range(4):
        await transport.publish("s.x", str(n).encode())

    assert len(received["a1"]) + len(received["a2"]) == 4
    assert received["a1"]
    assert received["a2"]
    assert received["b"] == received["plain1"] == received["plain2"] == [b"0", b"1", b"2", b"3"]
    assert [m.payload for m in transport.published] == [b"0", b"1", b"2", b"3"]


async def test_stop_receiving_ends_delivery() -> None:
    transport = MemoryTransport()
    received: list[bytes] = []

    async def handler(payload: bytes) -> None:
        received.append(payload)

    await transport.subscribe("s", queue="q", handler=handler)
    await transport.stop_receiving()
    await transport.publish("s", b"x")

    assert received == []
    assert len(transport.published) == 1


async def test_unsubscribe_ends_the_subscriptions_of_one_subject() -> None:
    transport = MemoryTransport()
    received: list[str] = []

    def collector(name: str) -> Callable[[bytes], Awaitable[None]]:
        async def handler(payload: bytes) -> None:
            received.append(name)

        return handler

    await transport.subscribe("s.a", queue="q", handler=collector("a"))
    await transport.subscribe("s.b", queue="q", handler=collector("b"))
    await transport.unsubscribe("s.a")
    await transport.unsubscribe("s.unknown")
    await transport.publish("s.a", b"1")
    await transport.publish("s.b", b"2")

    assert received == ["b"]
