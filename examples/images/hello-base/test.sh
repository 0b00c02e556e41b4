#!/bin/bash
# docker-pkg runs test.sh with the image reference: check what the Dockerfile wrote.
set -euo pipefail
docker run --rm --network none "$1" cat /etc/hello/base | grep -q '^hello-base '
