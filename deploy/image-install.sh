#!/usr/bin/env bash
# The install step of the container image (the Dockerfile's build stage runs it), kept in one
# script so that tests/integration/deploy/test_image_install.py can run exactly the same
# commands without Docker.
#
#   deploy/image-install.sh VENV SOURCE
#
# Creates the virtual environment VENV and installs into it, from the source tree SOURCE (a
# copy of the repository's build context): the task SDK, then the control plane with the
# example services' dependencies. Both are regular (not editable) installs, so VENV works
# without SOURCE. PYTHON picks the interpreter (default python3).
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 VENV SOURCE" >&2
    exit 2
fi
venv=$1
source_dir=$2

"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet "$source_dir/task-sdk" "${source_dir}[examples]"
# Fail the build on conflicting requirements rather than at run time.
"$venv/bin/python" -m pip check
