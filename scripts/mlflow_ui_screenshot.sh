#!/usr/bin/env bash
# Screenshot the MLflow UI page of the latest PAC flow run with headless Chromium.
#
#   bash scripts/mlflow_ui_screenshot.sh [OUT.png]
#
# Needs Debian's chromium (`apt-get install -y chromium`). Starts `mlflow server` on
# 127.0.0.1 over the pipeline's store (mlruns/mlflow.db, or MLFLOW_TRACKING_URI), finds the
# newest parent run of the `pac` experiment through the REST API, screenshots its page, and
# stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-mlruns/run_page.png}
py=.venv/bin/python
uri=${MLFLOW_TRACKING_URI:-sqlite:///mlruns/mlflow.db}
port=${PORT:-5057}
command -v chromium >/dev/null || { echo "chromium not found: apt-get install -y chromium" >&2; exit 1; }

.venv/bin/mlflow server --backend-store-uri "$uri" --default-artifact-root mlruns/artifacts \
  --host 127.0.0.1 --port "$port" -w 1 > mlruns/ui_server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 60); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 1
done

read -r exp run < <($py - "$port" <<'PY'
import json, sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}/api/2.0/mlflow"
def post(path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
exps = post("/experiments/search", {"max_results": 100})["experiments"]
exp_id = next(e["experiment_id"] for e in exps if e["name"] == "pac")
runs = post("/runs/search", {"experiment_ids": [exp_id],
            "filter": "tags.pac_role = 'flow'", "order_by": ["attributes.start_time DESC"],
            "max_results": 1})["runs"]
print(exp_id, runs[0]["info"]["run_id"])
PY
)
url="http://127.0.0.1:$port/#/experiments/$exp/runs/$run"
echo "run page: $url"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$(mktemp -d)" --window-size=1400,1000 --virtual-time-budget=15000 \
  --screenshot="$PWD/$out" "$url" 2>/dev/null
echo "saved $out"
