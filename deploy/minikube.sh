#!/usr/bin/env bash
# The control plane on a local minikube cluster (its profile is the cluster's name).
#
#   deploy/minikube.sh up      start the cluster, build and load the image, install the chart
#   deploy/minikube.sh smoke   run the example sequence through the installed release
#   deploy/minikube.sh down    delete the cluster
#   deploy/minikube.sh all     up, smoke, and down whatever happened
#
# Needs docker and minikube (any driver; the image is built with the host's docker and
# loaded with `minikube image load`); helm and kubectl come from PATH or scripts/fetch-helm.
# MINIKUBE_ARGS adds flags to `minikube start`, e.g. "--driver=docker --cpus=2". Settings
# are in deploy/lib.sh.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBE_CONTEXT=$CLUSTER
MINIKUBE_ARGS=${MINIKUBE_ARGS:-}

cluster_up() {
    require docker minikube
    local extra=()
    if [[ -n $MINIKUBE_ARGS ]]; then
        read -r -a extra <<<"$MINIKUBE_ARGS"
    fi
    log "starting minikube profile $CLUSTER"
    # Starting a running profile again is harmless: it only checks it.
    minikube start --profile "$CLUSTER" --wait all "${extra[@]}"
}

load_image() {
    log "loading $IMAGE into minikube profile $CLUSTER"
    minikube image load "$IMAGE" --profile "$CLUSTER"
}

cluster_down() {
    require minikube
    log "deleting minikube profile $CLUSTER"
    minikube delete --profile "$CLUSTER"
}

main "$@"
