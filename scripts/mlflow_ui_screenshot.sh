#!/usr/bin/env bash
# Screenshots of the newest PAC flow run in the MLflow UI (headless Chromium):
#
#   bash scripts/mlflow_ui_screenshot.sh [OUT_DIR]      # default: runs/review
#
# Needs Debian's chromium (`apt-get install -y chromium`). `pac review` starts `mlflow server` on
# 127.0.0.1 over the pipeline's store (tracking.uri, or MLFLOW_TRACKING_URI), checks that the
# parent run page shows the headline metrics and the champion version, that a figure renders and
# that the registered model page shows the @champion version and its model card, writes one PNG
# per page into OUT_DIR (relative or absolute) and stops the server. Exit status 1 when a page
# does not show what it should (the message quotes the page text).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/review}
command -v chromium >/dev/null || { echo "chromium not found: apt-get install -y chromium" >&2; exit 1; }
exec .venv/bin/python -m pac.cli review --out "$out"
