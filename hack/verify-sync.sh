#!/usr/bin/env bash
# Fails when the chart's or config/'s copies of crds/, config/rbac/, config/prometheus/,
# config/grafana/ or examples/ have drifted from their sources (see hack/sync.sh,
# which holds the one list of what is copied where).
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/sync.sh" --check
