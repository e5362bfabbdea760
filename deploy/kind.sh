#!/usr/bin/env bash
# The control plane on a local kind cluster (Kubernetes in Docker).
#
#   deploy/kind.sh up      create the cluster, build and load the image, install the chart
#   deploy/kind.sh smoke   run the example sequence through the installed release
#   deploy/kind.sh down    delete the cluster
#   deploy/kind.sh all     up, smoke, and down whatever happened
#
# Needs docker and kind; helm and kubectl come from PATH or scripts/fetch-helm. Settings are
# in deploy/lib.sh.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBE_CONTEXT="kind-$CLUSTER"

cluster_up() {
    require docker kind
    if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
        log "kind cluster $CLUSTER exists"
    else
        log "creating kind cluster $CLUSTER"
        kind create cluster --name "$CLUSTER" --wait 5m
    fi
}

load_image() {
    log "loading $IMAGE into kind cluster $CLUSTER"
    kind load docker-image "$IMAGE" --name "$CLUSTER"
}

cluster_down() {
    require kind
    log "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER"
}

main "$@"
