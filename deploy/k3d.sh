#!/usr/bin/env bash
# The control plane on a local k3d cluster (k3s in Docker).
#
#   deploy/k3d.sh up      create the cluster, build and import the image, install the chart
#   deploy/k3d.sh smoke   run the example sequence through the installed release
#   deploy/k3d.sh down    delete the cluster
#   deploy/k3d.sh all     up, smoke, and down whatever happened
#
# Needs docker and k3d; helm and kubectl come from PATH or scripts/fetch-helm. Settings are
# in deploy/lib.sh.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBE_CONTEXT="k3d-$CLUSTER"

cluster_up() {
    require docker k3d
    if k3d cluster get "$CLUSTER" >/dev/null 2>&1; then
        log "k3d cluster $CLUSTER exists"
    else
        log "creating k3d cluster $CLUSTER"
        k3d cluster create "$CLUSTER" --wait --timeout 5m
    fi
}

load_image() {
    log "importing $IMAGE into k3d cluster $CLUSTER"
    k3d image import "$IMAGE" --cluster "$CLUSTER"
}

cluster_down() {
    require k3d
    log "deleting k3d cluster $CLUSTER"
    k3d cluster delete "$CLUSTER"
}

main "$@"
