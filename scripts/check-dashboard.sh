#!/usr/bin/env bash
# Parses every PromQL query of config/grafana-estuary.json with promtool: each query,
# with Grafana's variables filled in, becomes a recording rule of a scratch rules file
# that `promtool check rules` must accept. (The metric names are checked against a live
# node by tests/ops_metrics.rs.)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp --suffix=.yml)
trap 'rm -f "$tmp"' EXIT
python3 - config/grafana-estuary.json "$tmp" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
exprs = []
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        for t in p.get("targets", []):
            exprs.append((p["title"], t["expr"]))
walk(dash["panels"])
assert len(exprs) >= 25, f"only {len(exprs)} queries"
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (title, e) in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$instance", ".*")
        out.write(f"      - record: dashboard:query{i}\n        expr: {json.dumps(e)}\n")
print(f"check-dashboard: {len(exprs)} queries")
PY
promtool check rules "$tmp" >/dev/null
echo "check-dashboard: ok"
