# shellcheck shell=bash
# Shared by deploy/k3d.sh, deploy/kind.sh and deploy/minikube.sh: build the image, install the
# chart into the current cluster context of the script, wait for it, smoke-test it.
#
# Each script sets CLUSTER (its cluster's name) and KUBE_CONTEXT (the kubeconfig context its
# tool creates) before calling these functions; every kubectl and helm call names that context,
# so the scripts never act on whatever context happens to be current.
#
# Settings (environment variables, all optional):
#   CLUSTER      cluster name                         (default: controlplane)
#   RELEASE      Helm release name                    (default: controlplane)
#   NAMESPACE    namespace of the release             (default: controlplane)
#   IMAGE        image to build and load              (default: controlplane:dev)
#   LOCAL_PORT   local port of the API port-forward   (default: 18080)
#   HELM_ARGS    extra arguments for helm, e.g. "--set examples.enabled=false"
#   CONTROLPLANE_CLI  the controlplane command for the smoke test (default: .venv/bin/controlplane;
#                when it is not there, the CLI inside the server's pod is used)

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$DEPLOY_DIR/.." && pwd)
CHART="$ROOT/helm/controlplane"

CLUSTER=${CLUSTER:-controlplane}
RELEASE=${RELEASE:-controlplane}
NAMESPACE=${NAMESPACE:-controlplane}
IMAGE=${IMAGE:-controlplane:dev}
LOCAL_PORT=${LOCAL_PORT:-18080}
HELM_ARGS=${HELM_ARGS:-}
CONTROLPLANE_CLI=${CONTROLPLANE_CLI:-$ROOT/.venv/bin/controlplane}

# The chart's resource names: "<release>-controlplane", or the release name when it already
# contains "controlplane", cut to 41 characters (as the chart's fullname helper does).
if [[ $RELEASE == *controlplane* ]]; then
    FULLNAME=$RELEASE
else
    FULLNAME="$RELEASE-controlplane"
fi
FULLNAME=${FULLNAME:0:41}
FULLNAME=${FULLNAME%-}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Fail early, naming every missing tool.
require() {
    local missing=() tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        die "missing tools: ${missing[*]} (see deploy/README.md)"
    fi
}

# helm and kubectl: from PATH, else the binaries scripts/fetch-helm puts into .cache/helm/.
find_tools() {
    if command -v helm >/dev/null 2>&1 && command -v kubectl >/dev/null 2>&1; then
        HELM=$(command -v helm)
        KUBECTL=$(command -v kubectl)
    else
        "$ROOT/scripts/fetch-helm" >/dev/null
        HELM="$ROOT/.cache/helm/helm"
        KUBECTL="$ROOT/.cache/helm/kubectl"
    fi
}

kube() { "$KUBECTL" --context "$KUBE_CONTEXT" "$@"; }
helm_() { "$HELM" --kube-context "$KUBE_CONTEXT" "$@"; }

build_image() {
    log "building $IMAGE"
    docker build --tag "$IMAGE" "$ROOT"
}

# Install or upgrade the release with the freshly loaded image (never pulled: pullPolicy
# Never makes a missing image an error instead of a pull from a registry), and wait until
# every Deployment and StatefulSet of it is ready, then until each of its pods is.
install_chart() {
    local repository=${IMAGE%:*} tag=${IMAGE##*:}
    if [[ $IMAGE != *:* || $tag == */* ]]; then
        die "IMAGE needs a tag, e.g. controlplane:dev (got $IMAGE)"
    fi
    local extra=()
    if [[ -n $HELM_ARGS ]]; then
        read -r -a extra <<<"$HELM_ARGS"
    fi
    log "installing the chart as $RELEASE in namespace $NAMESPACE"
    helm_ upgrade --install "$RELEASE" "$CHART" \
        --namespace "$NAMESPACE" --create-namespace \
        --set "image.repository=$repository" --set "image.tag=$tag" \
        --set image.pullPolicy=Never \
        --wait --timeout 10m "${extra[@]}"
    kube -n "$NAMESPACE" wait --for=condition=Ready pod \
        --selector "app.kubernetes.io/instance=$RELEASE" --timeout 5m
}

api_token() {
    kube -n "$NAMESPACE" get secret "$FULLNAME-api-token" -o jsonpath='{.data.api-token}' \
        | base64 -d
}

# Retry a command once a second for up to $1 seconds.
retry() {
    local seconds=$1 i
    shift
    for ((i = 0; i < seconds; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
    done
    "$@"
}

# The controlplane CLI: CONTROLPLANE_CLI (default: the repository's .venv) through the
# port-forward when it is installed, else the one in the server's image, run inside its pod
# (there the defaults reach the server and read the token from the pod's environment).
cli() {
    local command=$1
    shift
    if [[ -x $CONTROLPLANE_CLI ]]; then
        "$CONTROLPLANE_CLI" "$command" --url "$API_URL" \
            --token "$TOKEN" "$@"
    else
        kube -n "$NAMESPACE" exec "deployment/$FULLNAME" -c controlplane -- \
            controlplane "$command" "$@"
    fi
}

API_URL="http://127.0.0.1:$LOCAL_PORT"

examples_registered() {
    curl -fsS -H "x-token: $TOKEN" "$API_URL/api/controlPlane/v1/uniform/registration" \
        | grep -q controlplane-examples
}

# The smoke test: the API answers through a port-forward, the example services registered,
# the example sequence seed/dev/sequence-one passes, and (when the operator runs) a Sequence
# resource becomes Ready and runs too.
smoke() {
    local forward_log pid data
    forward_log=$(mktemp)
    log "port-forward to service/$FULLNAME on 127.0.0.1:$LOCAL_PORT"
    kube -n "$NAMESPACE" port-forward "service/$FULLNAME" "$LOCAL_PORT:8080" >"$forward_log" 2>&1 &
    pid=$!
    # shellcheck disable=SC2064 # expand now: the variables are local
    trap "kill $pid 2>/dev/null || true; rm -f '$forward_log'" EXIT

    TOKEN=$(api_token)
    retry 60 curl -fsS "$API_URL/health" \
        || { cat "$forward_log" >&2; die "no answer from $API_URL/health"; }
    log "the API is up; waiting for the example services to register"
    retry 60 examples_registered || die "the example services did not register"

    data='{"checknumber": {"number": "+41 44 668 18 00"}}'
    log "trigger seed/dev/sequence-one (from the chart's shipyard ConfigMap)"
    cli trigger seed dev sequence-one --service phone --data "$data" --wait --timeout 2m

    if kube get crd sequences.controlplane.dev >/dev/null 2>&1 \
        && kube -n "$NAMESPACE" get "deployment/$FULLNAME-operator" >/dev/null 2>&1; then
        log "apply deploy/examples/sequence-one.yaml and wait for the operator"
        kube -n "$NAMESPACE" apply -f "$DEPLOY_DIR/examples/sequence-one.yaml"
        kube -n "$NAMESPACE" wait --for=condition=Ready sequence.controlplane.dev/sequence-one \
            --timeout 2m
        log "trigger demo/dev/sequence-one (from the Sequence resource)"
        cli trigger demo dev sequence-one --service phone --data "$data" --wait --timeout 2m
        kube -n "$NAMESPACE" delete -f "$DEPLOY_DIR/examples/sequence-one.yaml" --wait=false
    fi
    log "smoke test passed"
}

# Dispatch "up", "smoke", "down" or "all" (up, smoke, then down whatever happened) to the
# calling script's cluster_up and cluster_down functions.
main() {
    local action=${1:-}
    case $action in
        up)
            find_tools
            cluster_up
            build_image
            load_image
            install_chart
            ;;
        smoke)
            find_tools
            smoke
            ;;
        down)
            cluster_down
            ;;
        all)
            find_tools
            trap cluster_down EXIT
            cluster_up
            build_image
            load_image
            install_chart
            (smoke)
            ;;
        *)
            printf 'usage: %s up|smoke|down|all\n' "$0" >&2
            exit 2
            ;;
    esac
}
