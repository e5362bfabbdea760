from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain.errors import InvalidShipyard, Problem
from controlplane.domain.graph import (
    Cycle,
    dangling_links,
    links,
    mermaid,
    selector_label,
    unintended_cycles,
)
from controlplane.domain.shipyard import Sequence, Shipyard, Stage, Task, Trigger, parse_shipyard


def on(event: str, **match: str) -> Trigger:
    stage, sequence, _ = event.split(".")
    return Trigger(stage, sequence, match or None)


def seq(
    name: str, *triggers: Trigger, tasks: tuple[str, ...] = ("t",), loop: bool = False
) -> Sequence:
    return Sequence(name, tuple(Task(task) for task in tasks), triggers, loop=loop)


def stage(name: str, *sequences: Sequence) -> Stage:
    return Stage(name, sequences)


def path(s: int, q: int, t: int) -> str:
    return f"spec.stages[{s}].sequences[{q}].triggeredOn[{t}].event"


def texts(cycles: list[Cycle]) -> list[str]:
    return [cycle.text for cycle in cycles]


# ---------------------------------------------------------------------- links


def test_links_run_from_the_finished_sequence_to_the_one_it_starts() -> None:
    stages = (stage("dev", seq("a")), stage("prod", seq("b", on("dev.a.finished"))))
    (link,) = links(stages)
    assert (link.source, link.target, link.path) == (("dev", "a"), ("prod", "b"), path(1, 0, 0))


def test_a_link_to_a_missing_stage_names_the_stage() -> None:
    stages = (stage("dev", seq("a", on("qa.a.finished"))),)
    assert dangling_links(stages) == [
        Problem(
            path(0, 0, 0),
            "'qa.a.finished' can never fire: stage 'qa' is not defined in the shipyard",
        )
    ]


def test_a_link_to_a_missing_sequence_names_the_sequence_and_its_stage() -> None:
    stages = (
        stage("dev", seq("a")),
        stage("prod", seq("b", on("dev.a.finished"), on("dev.x.finished"))),
    )
    assert dangling_links(stages) == [
        Problem(
            path(1, 0, 1),
            "'dev.x.finished' can never fire: sequence 'x' is not defined in stage 'dev'",
        )
    ]


def test_the_implicit_evaluation_sequence_is_a_target_of_every_stage() -> None:
    stages = (stage("dev"), stage("prod", seq("b", on("dev.evaluation.finished"))))
    assert dangling_links(stages) == []
    assert unintended_cycles(stages) == []


# ---------------------------------------------------------------------- cycles


def test_a_sequence_triggering_itself_is_a_cycle() -> None:
    stages = (stage("dev", seq("a", on("dev.a.finished", result="fail"))),)
    assert unintended_cycles(stages) == [Cycle((("dev", "a"), ("dev", "a")), path(0, 0, 0))]
    assert "dev.a → dev.a" in unintended_cycles(stages)[0].message
    assert "'loop: true'" in unintended_cycles(stages)[0].message


def test_a_two_cycle_is_named_from_its_first_sequence_and_blames_the_closing_link() -> None:
    stages = (stage("dev", seq("a", on("dev.b.finished")), seq("b", on("dev.a.finished"))),)
    (cycle,) = unintended_cycles(stages)
    assert cycle.text == "dev.a → dev.b → dev.a"
    assert cycle.path == path(0, 0, 0)  # a's trigger on b closes the loop


def test_a_three_cycle_across_stages() -> None:
    stages = (
        stage("dev", seq("a", on("prod.c.finished"))),
        stage("qa", seq("b", on("dev.a.finished"))),
        stage("prod", seq("c", on("qa.b.finished")), seq("d", on("prod.c.finished"))),
    )
    (cycle,) = unintended_cycles(stages)
    assert cycle.text == "dev.a → qa.b → prod.c → dev.a"
    assert cycle.path == path(0, 0, 0)


def test_a_chain_without_a_way_back_is_no_cycle() -> None:
    stages = (
        stage("dev", seq("a"), seq("b", on("dev.a.finished"))),
        stage("prod", seq("c", on("dev.a.finished"), on("dev.b.finished"))),
    )
    assert unintended_cycles(stages) == []


@pytest.mark.parametrize("marked", ["a", "b", "c"])
def test_loop_true_on_any_sequence_of_the_cycle_allows_it(marked: str) -> None:
    stages = (
        stage(
            "dev",
            seq("a", on("dev.c.finished"), loop=marked == "a"),
            seq("b", on("dev.a.finished"), loop=marked == "b"),
            seq("c", on("dev.b.finished"), loop=marked == "c"),
        ),
    )
    assert unintended_cycles(stages) == []


def test_loop_true_on_a_self_triggering_sequence_allows_it() -> None:
    stages = (
        stage("production", seq("remediation", on("production.remediation.finished"), loop=True)),
    )
    assert unintended_cycles(stages) == []


def test_loop_true_excuses_only_the_cycles_through_that_sequence() -> None:
    # a <-> b is a loop nobody declared; b <-> c passes through c, which says it loops.
    stages = (
        stage(
            "dev",
            seq("a", on("dev.b.finished")),
            seq("b", on("dev.a.finished"), on("dev.c.finished")),
            seq("c", on("dev.b.finished"), loop=True),
        ),
    )
    assert texts(unintended_cycles(stages)) == ["dev.a → dev.b → dev.a"]


def test_each_loop_is_reported_once() -> None:
    stages = (
        stage(
            "dev",
            # one tangle: a -> b -> a, a -> c -> a, b -> c -> b
            seq("a", on("dev.b.finished"), on("dev.c.finished")),
            seq("b", on("dev.a.finished"), on("dev.c.finished")),
            seq("c", on("dev.a.finished"), on("dev.b.finished")),
            # a separate loop, and a self-loop
            seq("x", on("dev.y.finished")),
            seq("y", on("dev.x.finished")),
        ),
        stage("prod", seq("z", on("prod.z.finished"), on("dev.a.finished"))),
    )
    assert texts(unintended_cycles(stages)) == [
        "dev.a → dev.b → dev.a",
        "dev.x → dev.y → dev.x",
        "prod.z → prod.z",
    ]


def test_dangling_links_take_no_part_in_cycles() -> None:
    stages = (stage("dev", seq("a", on("dev.nope.finished"), on("qa.a.finished"))),)
    assert unintended_cycles(stages) == []


def test_a_long_loop_needs_no_recursion() -> None:
    count = 3000
    sequences = [seq(f"s{i}", on(f"dev.s{(i - 1) % count}.finished")) for i in range(count)]
    (cycle,) = unintended_cycles((stage("dev", *sequences),))
    assert len(cycle.nodes) == count + 1
    assert cycle.nodes[0] == cycle.nodes[-1] == ("dev", "s0")


# ---------------------------------------------------------------------- through the parser


def document(*stages: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "spec.keptn.sh/0.2.4", "spec": {"stages": list(stages)}}


def test_the_parser_refuses_dangling_links_and_warns_about_loops() -> None:
    with pytest.raises(InvalidShipyard) as caught:
        parse_shipyard(
            document(
                {
                    "name": "dev",
                    "sequences": [{"name": "a", "triggeredOn": [{"event": "dev.b.finished"}]}],
                }
            ),
            source="bad.yaml",
        )
    assert str(caught.value) == (
        "bad.yaml: spec.stages[0].sequences[0].triggeredOn[0].event: 'dev.b.finished' can never"
        " fire: sequence 'b' is not defined in stage 'dev'"
    )
    lines = {"spec.stages[0].sequences[0].triggeredOn[0].event": 7}
    shipyard = parse_shipyard(
        document(
            {
                "name": "dev",
                "sequences": [
                    {"name": "a", "triggeredOn": [{"event": "dev.b.finished"}]},
                    {"name": "b", "triggeredOn": [{"event": "dev.a.finished"}]},
                ],
            }
        ),
        lines=lines,
    )
    # The loop starts at its first sequence; a's trigger on b closes it.
    assert shipyard.warnings == (
        "line 7: spec.stages[0].sequences[0].triggeredOn[0].event: triggeredOn links form a loop,"
        " dev.a → dev.b → dev.a, which runs again for as long as its selectors match; if that is"
        " intended, mark a sequence on it with 'loop: true'",
    )


def test_loop_true_in_yaml_silences_the_warning() -> None:
    # Needs the parser to read `loop` on a sequence.
    shipyard = parse_shipyard(
        document(
            {
                "name": "dev",
                "sequences": [
                    {"name": "a", "triggeredOn": [{"event": "dev.b.finished"}]},
                    {"name": "b", "loop": True, "triggeredOn": [{"event": "dev.a.finished"}]},
                ],
            }
        )
    )
    assert shipyard.warnings == ()


# ---------------------------------------------------------------------- diagram


def shipyard(*stages: Stage) -> Shipyard:
    return Shipyard("spec.keptn.sh/0.2.4", "demo", stages)


def test_mermaid_draws_stages_sequences_tasks_and_links() -> None:
    drawn = mermaid(
        shipyard(
            stage("dev", seq("delivery", tasks=("deployment", "test", "evaluation"))),
            stage(
                "prod",
                seq("delivery", on("dev.delivery.finished"), tasks=("deployment",)),
                seq(
                    "rollback",
                    on("prod.delivery.finished", result="fail"),
                    on("prod.delivery.finished", **{"deployment.result": "fail"}),
                    tasks=("rollback",),
                ),
                seq(
                    "remediation",
                    on("prod.remediation.finished", **{"evaluation.result": "fail"}),
                    on("dev.evaluation.finished"),
                    tasks=("action", "evaluation"),
                    loop=True,
                ),
            ),
            stage("empty"),
        )
    )
    assert drawn == (
        "flowchart LR\n"
        '  subgraph s0["dev"]\n'
        '    s0_q0["delivery<br/>deployment → test → evaluation"]\n'
        '    s0_implicit(["evaluation<br/>(built in)"])\n'
        "  end\n"
        '  subgraph s1["prod"]\n'
        '    s1_q0["delivery<br/>deployment"]\n'
        '    s1_q1["rollback<br/>rollback"]\n'
        '    s1_q2["remediation (loop)<br/>action → evaluation"]\n'
        "  end\n"
        '  subgraph s2["empty"]\n'
        '    s2_implicit(["evaluation<br/>(built in)"])\n'
        "  end\n"
        '  s0_q0 -->|"pass|warning"| s1_q0\n'
        '  s1_q0 -->|"result: fail or deployment.result: fail"| s1_q1\n'
        '  s1_q2 -.->|"evaluation.result: fail"| s1_q2\n'
        '  s0_implicit -->|"pass|warning"| s1_q2\n'
    )


def test_mermaid_dashes_every_link_on_a_loop() -> None:
    drawn = mermaid(
        shipyard(
            stage(
                "dev",
                seq("a", on("dev.b.finished")),
                seq("b", on("dev.a.finished")),
                seq("c", on("dev.b.finished")),
            )
        )
    )
    assert drawn.splitlines()[-3:] == [
        '  s0_q1 -.->|"pass|warning"| s0_q0',
        '  s0_q0 -.->|"pass|warning"| s0_q1',
        '  s0_q1 -->|"pass|warning"| s0_q2',
    ]


def test_mermaid_escapes_names_and_selector_values() -> None:
    odd = 'say"hi"#1<b>&`x`'
    drawn = mermaid(
        shipyard(
            stage(
                "dev",
                seq(odd, tasks=("t<1>",)),
                seq("end", on(f"dev.{odd}.finished", result='a"b\nc')),
            )
        )
    )
    assert '["say#34;hi#34;#35;1#60;b#62;#38;#96;x#96;<br/>t#60;1#62;"]' in drawn
    assert '-->|"result: a#34;b c"|' in drawn
    # Only the quotes that delimit labels remain, two per node, subgraph and link line.
    for line in drawn.splitlines()[1:]:
        assert line.count('"') in (0, 2), line


def test_mermaid_ids_come_from_positions_not_names() -> None:
    drawn = mermaid(shipyard(stage("a-b", seq("x y")), stage("c", seq("graph"))))
    assert '  subgraph s0["a-b"]' in drawn
    assert '    s0_q0["x y<br/>t"]' in drawn
    assert '    s1_q0["graph<br/>t"]' in drawn


def test_mermaid_is_the_same_for_the_same_shipyard() -> None:
    def build() -> Shipyard:
        return shipyard(
            stage("dev", seq("a", on("dev.b.finished")), seq("b", on("dev.a.finished"))),
            stage("prod", seq("c", on("dev.a.finished"), on("dev.b.finished"))),
        )

    assert mermaid(build()) == mermaid(build())


def test_a_sequence_without_tasks_says_so() -> None:
    assert '["idle<br/>(no tasks)"]' in mermaid(shipyard(stage("dev", seq("idle", tasks=()))))


@pytest.mark.parametrize(
    ("trigger", "label"),
    [
        (Trigger("dev", "a"), "pass|warning"),
        (Trigger("dev", "a", {"result": "fail"}), "result: fail"),
        (Trigger("dev", "a", {"test.result": "pass", "team": "x"}), "test.result: pass"),
        (Trigger("dev", "a", {}), "never (match names no result)"),
        (Trigger("dev", "a", {"team": "x"}), "never (match names no result)"),
    ],
)
def test_selector_labels_show_what_starts_the_link(trigger: Trigger, label: str) -> None:
    assert selector_label(trigger) == label
