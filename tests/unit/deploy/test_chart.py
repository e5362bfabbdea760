"""The Helm chart: lint, schema-valid Kubernetes objects, refused values, and what it wires."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from controlplane.adapters.files import YamlShipyardReader
from controlplane.settings import Settings
from tests.unit.deploy.helpers import (
    CHART,
    EXTERNAL_VALUES,
    NAMESPACE,
    RELEASE,
    ROOT,
    Helm,
    Manifest,
    containers,
    env_of,
    find,
    kubernetes_validate,
    one,
    pod_specs,
    secret_value,
)

FULLNAME = f"{RELEASE}-controlplane"
VALUE_SETS = {"default": (), "external": ("--values", str(EXTERNAL_VALUES))}


# --- lint and validation --------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_strict_passes(helm: Helm, values: tuple[str, ...]) -> None:
    result = helm.run("lint", "--strict", CHART, *values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_rendered_object_is_valid_kubernetes(helm: Helm, values: tuple[str, ...]) -> None:
    rendered = helm.template(*values, crds=True)
    documents = [doc for doc in yaml.safe_load_all(rendered) if doc]
    result = kubernetes_validate(rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # One "passed" per object: an unknown kind would only be a WARN line, not an error.
    assert len(lines) == len(documents)
    assert all(line.startswith("INFO") and " passed " in line for line in lines), lines


def test_the_external_values_render_what_they_say(external_manifests: list[Manifest]) -> None:
    kinds = sorted({m["kind"] for m in external_manifests})
    assert "Ingress" in kinds
    assert "StatefulSet" not in kinds
    ingress = one(external_manifests, "Ingress", FULLNAME)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"secretName": "controlplane-tls", "hosts": ["controlplane.example.com"]}
    ]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": FULLNAME, "port": {"name": "http"}}}
    assert not find(external_manifests, "Deployment", f"{FULLNAME}-examples")


# --- values the schema or the templates refuse -----------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=-1"], "at '/replicaCount': minimum: got -1, want 0"),
        (["--set", "replicaCount=2"], "at '/replicaCount': maximum: got 2, want 1"),
        (["--set", "replicaCuont=1"], "at '': additional properties 'replicaCuont' not allowed"),
        (["--set", "nats.enabeld=false"], "at '/nats': additional properties 'enabeld'"),
        (
            ["--set", "postgresql.persistence.sise=1Gi"],
            "at '/postgresql/persistence': additional properties 'sise' not allowed",
        ),
        (["--set", "service.port=http"], "at '/service/port': got string, want integer"),
        (["--set", "examples.enabled=yes"], "at '/examples/enabled': got string, want boolean"),
        (["--set", "config.logLevel=verbose"], "at '/config/logLevel': value must be one of"),
        (["--set", "config.taskStartedTimeout=ten minutes"], "at '/config/taskStartedTimeout'"),
        (["--set", "config.batchSize=0"], "at '/config/batchSize': minimum: got 0, want 1"),
        (["--set", "operator.namespaces={Team_A}"], "at '/operator/namespaces/0'"),
        (["--set", "postgresql.auth.password=p@ss"], "at '/postgresql/auth/password'"),
        (["--set", "ingress.hosts[0].paths[0].pathType=Any"], "pathType': value must be one of"),
        (
            ["--set", "nats.enabled=false"],
            "nats.enabled is false: set nats.url or nats.urlSecret.name",
        ),
        (
            ["--set", "postgresql.enabled=false"],
            "postgresql.enabled is false: set postgresql.url or postgresql.urlSecret.name",
        ),
    ],
)
def test_bad_values_fail_with_a_message_naming_them(
    helm: Helm, args: list[str], message: str
) -> None:
    assert message in helm.fails(*args)


def test_the_schema_is_draft_07_and_closed_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))

    def resolve(node: dict[str, object]) -> dict[str, object]:
        ref = node.get("$ref")
        if isinstance(ref, str):
            return resolve(schema["definitions"][ref.rsplit("/", 1)[1]])
        return node

    def walk(value: object, node: dict[str, object], path: str) -> None:
        node = resolve(node)
        if not isinstance(value, dict) or "properties" not in node:
            return
        assert node.get("additionalProperties") is False, f"{path or '/'} is open"
        properties = node["properties"]
        assert isinstance(properties, dict)
        assert set(value) <= set(properties), f"{path}: {set(value) - set(properties)}"
        for key, child in value.items():
            walk(child, properties[key], f"{path}/{key}")

    walk(values, schema, "")


# --- what the chart wires --------------------------------------------------------------------


def workloads_of_image(manifests: list[Manifest]) -> dict[str, Manifest]:
    """The pods that run the control plane image (server, operator, examples)."""
    return {
        name: pod
        for name, pod in pod_specs(manifests).items()
        if all("controlplane" in c["image"] for c in pod["containers"])
    }


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_pod_runs_as_non_root_with_a_locked_down_container(
    helm: Helm, values: tuple[str, ...]
) -> None:
    pods = pod_specs(helm.render(*values))
    assert pods
    for name, pod in pods.items():
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["runAsUser"] > 0, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not pod.get("hostNetwork"), name
        assert not pod.get("hostPID"), name
        for container in containers(pod):
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert not context.get("privileged"), where


def test_pods_of_the_control_plane_image_run_as_its_user_with_a_writable_tmp(
    default_manifests: list[Manifest],
) -> None:
    pods = workloads_of_image(default_manifests)
    assert set(pods) == {
        f"Deployment/{FULLNAME}",
        f"Deployment/{FULLNAME}-operator",
        f"Deployment/{FULLNAME}-examples",
    }
    for name, pod in pods.items():
        assert pod["securityContext"]["runAsUser"] == 10001, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["tmp"], name
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] == "tmp", name


def test_only_the_operator_gets_a_kubernetes_api_token(default_manifests: list[Manifest]) -> None:
    for name, pod in pod_specs(default_manifests).items():
        expected = name == f"Deployment/{FULLNAME}-operator"
        assert pod["automountServiceAccountToken"] is expected, name


def test_the_server_is_probed_on_health_and_never_runs_twice(
    default_manifests: list[Manifest],
) -> None:
    deployment = one(default_manifests, "Deployment", FULLNAME)
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["replicas"] == 1
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    assert server["args"] == ["serve"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert server["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    env = env_of(server)
    assert env["CONTROLPLANE_HOST"]["value"] == "0.0.0.0"
    assert env["CONTROLPLANE_PORT"]["value"] == "8080"
    service = one(default_manifests, "Service", FULLNAME)
    assert service["spec"]["ports"][0]["targetPort"] == "http"


# Settings the chart gives the server with values of its own, not the application's default.
CHART_CHOSEN = {"nats_url", "database_url", "host", "sequences", "api_token", "log_format"}
OPERATOR_ONLY = {"api_url", "operator_namespaces", "operator_liveness_port"}
UP_ONLY = {"data_dir", "local_nats_port"}


def test_every_setting_reaches_its_process_with_the_application_default(helm: Helm) -> None:
    manifests = helm.render("--set", "metricSecrets.existingSecret=metric-credentials")
    server = one(manifests, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    operator = one(manifests, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"]
    server_env, operator_env = env_of(server), env_of(operator["containers"][0])

    def variable(field: str) -> str:
        return f"CONTROLPLANE_{field.upper()}"

    # A new setting fails here until the chart passes it on (or it is listed as not ours).
    for field in Settings.model_fields:
        if field in UP_ONLY:
            continue
        where = operator_env if field in OPERATOR_ONLY else server_env
        assert variable(field) in where, f"the chart does not set {variable(field)}"
    for field in ("api_token", "log_level", "log_format"):
        assert variable(field) in operator_env

    # The chart's defaults are the application's defaults, as the server parses them.
    plain = {
        name.removeprefix("CONTROLPLANE_").lower(): entry["value"]
        for name, entry in server_env.items()
        if "value" in entry and name.removeprefix("CONTROLPLANE_").lower() in Settings.model_fields
    }
    parsed, defaults = Settings(**plain), Settings()
    for field in plain.keys() - CHART_CHOSEN - {"port", "secrets_dir"}:
        assert getattr(parsed, field) == getattr(defaults, field), field
    assert parsed.port == 8080
    assert parsed.log_format == "json"
    assert str(parsed.secrets_dir) == "/etc/controlplane/secrets"
    volume = next(v for v in manifests_volumes(manifests) if v["name"] == "metric-secrets")
    assert volume["secret"] == {"secretName": "metric-credentials"}
    mount = next(m for m in server["volumeMounts"] if m["name"] == "metric-secrets")
    assert mount == {
        "name": "metric-secrets",
        "mountPath": "/etc/controlplane/secrets",
        "readOnly": True,
    }
    assert "CONTROLPLANE_SECRETS_DIR" not in env_of(
        one(helm.render(), "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    )


def manifests_volumes(manifests: list[Manifest]) -> list[Manifest]:
    return one(manifests, "Deployment", FULLNAME)["spec"]["template"]["spec"]["volumes"]


def token_references(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {
        f"{name}/{container['name']}": env_of(container)["CONTROLPLANE_API_TOKEN"]
        for name, pod in workloads_of_image(manifests).items()
        for container in pod["containers"]
    }


def test_the_api_token_comes_from_one_generated_secret(default_manifests: list[Manifest]) -> None:
    secret = one(default_manifests, "Secret", f"{FULLNAME}-api-token")
    assert len(secret_value(secret, "api-token")) == 40
    references = token_references(default_manifests)
    assert len(references) == 3
    for where, entry in references.items():
        assert entry == {
            "name": "CONTROLPLANE_API_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": f"{FULLNAME}-api-token", "key": "api-token"}},
        }, where


def test_an_existing_token_secret_replaces_the_generated_one(
    external_manifests: list[Manifest],
) -> None:
    assert not find(external_manifests, "Secret", f"{FULLNAME}-api-token")
    for where, entry in token_references(external_manifests).items():
        assert entry["valueFrom"]["secretKeyRef"] == {
            "name": "controlplane-token",
            "key": "token",
        }, where


def test_an_explicit_token_is_stored_as_given(helm: Helm) -> None:
    manifests = helm.render("--set", "auth.token=s3cr3t-t0ken")
    secret = one(manifests, "Secret", f"{FULLNAME}-api-token")
    assert secret_value(secret, "api-token") == "s3cr3t-t0ken"


def test_in_chart_nats_and_postgresql_are_wired_to_the_server(
    default_manifests: list[Manifest],
) -> None:
    nats = one(default_manifests, "StatefulSet", f"{FULLNAME}-nats")
    container = nats["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nats:2.10-alpine"
    assert container["args"][:3] == ["-js", "-sd", "/data"]
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert container["readinessProbe"]["httpGet"]["port"] == "monitor"
    assert container["livenessProbe"]["httpGet"]["path"].startswith("/healthz")
    assert [t["metadata"]["name"] for t in nats["spec"]["volumeClaimTemplates"]] == ["data"]
    assert one(default_manifests, "Service", f"{FULLNAME}-nats")["spec"]["clusterIP"] == "None"

    postgres = one(default_manifests, "StatefulSet", f"{FULLNAME}-postgresql")
    container = postgres["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "postgres:16-alpine"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"][0] == "pg_isready"
    password = env_of(container)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": f"{FULLNAME}-postgresql", "key": "password"}
    secret = one(default_manifests, "Secret", f"{FULLNAME}-postgresql")
    assert secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}

    server = one(default_manifests, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    env = env_of(server["containers"][0])
    assert env["CONTROLPLANE_NATS_URL"]["value"] == f"nats://{FULLNAME}-nats.{NAMESPACE}.svc:4222"
    assert env["CONTROLPLANE_DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"] == password
    assert env["CONTROLPLANE_DATABASE_URL"]["value"] == (
        f"postgresql://controlplane:$(CONTROLPLANE_DATABASE_PASSWORD)"
        f"@{FULLNAME}-postgresql.{NAMESPACE}.svc:5432/controlplane"
    )
    names = [entry["name"] for entry in server["containers"][0]["env"]]
    assert names.index("CONTROLPLANE_DATABASE_PASSWORD") < names.index("CONTROLPLANE_DATABASE_URL")
    wait = server["initContainers"][0]
    assert wait["args"] == [
        f"{FULLNAME}-nats.{NAMESPACE}.svc:4222",
        f"{FULLNAME}-postgresql.{NAMESPACE}.svc:5432",
    ]


def test_external_nats_and_postgresql_replace_the_statefulsets(
    external_manifests: list[Manifest],
) -> None:
    assert not find(external_manifests, "StatefulSet")
    names = {m["metadata"]["name"] for m in external_manifests}
    assert f"{FULLNAME}-nats" not in names
    assert f"{FULLNAME}-postgresql" not in names

    server = one(external_manifests, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert "initContainers" not in server
    env = env_of(server["containers"][0])
    assert env["CONTROLPLANE_NATS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "nats-credentials",
        "key": "url",
    }
    assert "CONTROLPLANE_DATABASE_PASSWORD" not in env
    reference = env["CONTROLPLANE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": f"{FULLNAME}-database-url", "key": "database-url"}
    secret = one(external_manifests, "Secret", f"{FULLNAME}-database-url")
    assert secret_value(secret, "database-url") == (
        "postgresql://controlplane:s3cret@db.example.com:5432/controlplane"
    )


def test_plain_external_urls_and_an_existing_dsn_secret(helm: Helm) -> None:
    manifests = helm.render(
        "--set",
        "nats.enabled=false,nats.url=nats://nats.messaging:4222",
        "--set",
        "postgresql.enabled=false,postgresql.urlSecret.name=db,postgresql.urlSecret.key=dsn",
    )
    assert not find(manifests, "StatefulSet")
    assert not find(manifests, "Secret", f"{FULLNAME}-database-url")
    for name in (FULLNAME, f"{FULLNAME}-examples"):
        pod = one(manifests, "Deployment", name)["spec"]["template"]["spec"]
        env = env_of(pod["containers"][0])
        nats = env.get("CONTROLPLANE_NATS_URL") or env["NATS_URL"]
        assert nats["value"] == "nats://nats.messaging:4222", name
    server = one(manifests, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert env_of(server["containers"][0])["CONTROLPLANE_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "db", "key": "dsn"}
    }


def test_the_example_services_reach_nats_and_the_api(default_manifests: list[Manifest]) -> None:
    pod = one(default_manifests, "Deployment", f"{FULLNAME}-examples")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "command" not in container  # the image's entry point: `controlplane examples`
    assert container["args"] == ["examples"]
    env = env_of(container)
    assert env["CONTROLPLANE_NATS_URL"]["value"] == f"nats://{FULLNAME}-nats.{NAMESPACE}.svc:4222"
    assert env["CONTROLPLANE_API_URL"]["value"] == f"http://{FULLNAME}.{NAMESPACE}.svc:8080"
    server = one(default_manifests, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    compile(server["initContainers"][0]["command"][2], "wait-command", "exec")


def test_the_operator_gets_the_api_and_cluster_wide_rights_by_default(
    default_manifests: list[Manifest],
) -> None:
    pod = one(default_manifests, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"{FULLNAME}-operator"
    container = pod["containers"][0]
    assert container["args"] == ["operator"]
    env = env_of(container)
    assert env["CONTROLPLANE_API_URL"]["value"] == f"http://{FULLNAME}.{NAMESPACE}.svc:8080"
    assert env["CONTROLPLANE_OPERATOR_NAMESPACES"]["value"] == ""
    assert env["CONTROLPLANE_OPERATOR_LIVENESS_PORT"]["value"] == "8081"
    assert container["ports"] == [{"name": "liveness", "containerPort": 8081, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}

    rules = one(default_manifests, "ClusterRole", f"{FULLNAME}-operator")["rules"]
    assert rules == [*OPERATOR_RULES, *SCANNING_RULES]
    binding = one(default_manifests, "ClusterRoleBinding", f"{FULLNAME}-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{FULLNAME}-operator", "namespace": NAMESPACE}
    ]
    assert binding["roleRef"]["name"] == f"{FULLNAME}-operator"
    assert len(find(default_manifests, "ClusterRole")) == 1
    assert not find(default_manifests, "Role")


OPERATOR_RULES = [
    {
        "apiGroups": ["controlplane.dev"],
        "resources": ["sequences"],
        "verbs": ["get", "list", "watch", "patch", "update"],
    },
    {
        "apiGroups": ["controlplane.dev"],
        "resources": ["sequences/status"],
        "verbs": ["get", "patch", "update"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]


SCANNING_RULES = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]


def test_listed_namespaces_get_roles_and_no_cluster_wide_rights(
    external_manifests: list[Manifest],
) -> None:
    roles = find(external_manifests, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(r["rules"] == OPERATOR_RULES for r in roles)
    bindings = find(external_manifests, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["name"] == f"{FULLNAME}-operator"
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    # The operator turns kopf's scanning off for exact names: nothing cluster-wide at all.
    assert not find(external_manifests, "ClusterRole")
    assert not find(external_manifests, "ClusterRoleBinding")
    pod = one(external_manifests, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]
    env = env_of(pod["spec"]["containers"][0])
    assert env["CONTROLPLANE_OPERATOR_NAMESPACES"]["value"] == "team-a,team-b"


def test_without_the_operator_there_is_no_rbac(helm: Helm) -> None:
    manifests = helm.render("--set", "operator.enabled=false")
    kinds = {m["kind"] for m in manifests}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    assert not find(manifests, "Deployment", f"{FULLNAME}-operator")


def test_the_default_shipyard_is_the_repository_seed_and_is_mounted(
    default_manifests: list[Manifest],
) -> None:
    config_map = one(default_manifests, "ConfigMap", f"{FULLNAME}-sequences")
    assert set(config_map["data"]) == {"seed.yaml"}
    text = config_map["data"]["seed.yaml"]
    assert yaml.safe_load(text) == yaml.safe_load(
        (ROOT / "sequences" / "seed.yaml").read_text(encoding="utf-8")
    )
    shipyard = YamlShipyardReader().read(text, "seed.yaml")
    assert shipyard.warnings == ()
    dev = shipyard.stages[0]
    assert dev.name == "dev"
    assert "sequence-one" in [sequence.name for sequence in dev.sequences]

    pod = one(default_manifests, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "sequences")
    assert env_of(container)["CONTROLPLANE_SEQUENCES"]["value"] == mount["mountPath"]
    volume = next(v for v in pod["volumes"] if v["name"] == "sequences")
    assert volume["configMap"]["name"] == f"{FULLNAME}-sequences"


def test_a_changed_shipyard_rolls_the_server(helm: Helm, tmp_path: Path) -> None:
    def checksum(*args: str | Path) -> str:
        deployment = one(helm.render(*args), "Deployment", FULLNAME)
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/sequences"]

    values = tmp_path / "values.yaml"
    shipyard = "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\nmetadata: {name: other}\n"
    values.write_text(yaml.safe_dump({"sequences": {"files": {"other.yaml": shipyard}}}))
    assert checksum() != checksum("--values", values)


def test_the_example_shipyard_can_be_dropped(helm: Helm) -> None:
    manifests = helm.render("--set", "sequences.files.seed\\.yaml=null")
    assert one(manifests, "ConfigMap", f"{FULLNAME}-sequences")["data"] == {}


def test_an_existing_configmap_replaces_the_shipyard_files(
    external_manifests: list[Manifest],
) -> None:
    assert not find(external_manifests, "ConfigMap")
    pod = one(external_manifests, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "sequences")
    assert volume["configMap"]["name"] == "shipyards"


def test_resource_names_fit_kubernetes_limits_for_a_long_release_name(helm: Helm) -> None:
    release = "a-release-name-of-fifty-three-characters-helm-s-limit"
    assert len(release) == 53
    result = helm.run("template", release, CHART, "--namespace", NAMESPACE)
    assert result.returncode == 0, result.stderr
    for manifest in (m for m in yaml.safe_load_all(result.stdout) if m):
        name = manifest["metadata"]["name"]
        assert len(name) <= 63, name
        assert not name.endswith("-"), name
        if manifest["kind"] == "StatefulSet":  # its pods' revision label adds 11 characters
            assert len(name) <= 52, name


def test_notes_tell_how_to_reach_the_api_and_run_the_example(helm: Helm) -> None:
    result = helm.run("install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} port-forward service/{FULLNAME} 8080:8080" in notes
    assert f"get secret {FULLNAME}-api-token -o jsonpath='{{.data.api-token}}'" in notes
    assert "controlplane trigger seed dev sequence-one" in notes
    assert '--service phone --data \'{"checknumber": {"number": "+41 44 668 18 00"}}\'' in notes
    assert "--wait" in notes


def test_the_readme_documents_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    readme = (ROOT / "helm" / "README.md").read_text(encoding="utf-8")
    documented = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `")}

    def paths(value: object, node: dict[str, object], prefix: str) -> list[str]:
        ref = node.get("$ref")
        if ref == "#/definitions/resources":
            return [prefix]
        if isinstance(ref, str):
            node = schema["definitions"][ref.rsplit("/", 1)[1]]
        properties = node.get("properties")
        if not isinstance(value, dict) or not isinstance(properties, dict):
            return [prefix]
        return [
            path
            for key, child in value.items()
            for path in paths(child, properties[key], f"{prefix}.{key}" if prefix else key)
        ]

    expected = set(paths(values, schema, ""))
    assert expected - documented == set()
    assert documented - expected == set()
