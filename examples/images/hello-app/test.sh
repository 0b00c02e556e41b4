#!/bin/bash
set -euo pipefail
docker run --rm --network none "$1" | grep -q '^hello-app on hello-base '
