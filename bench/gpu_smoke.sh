#!/usr/bin/env bash
# GPU smoke test, one command on any CUDA machine (from the repository root, after `make setup`):
#
#     bash bench/gpu_smoke.sh [OUT]          (default OUT: results/gpu_smoke)
#
# 1. the demo preset end to end on the GPU (flow, features and train on CUDA), its wall time and mAP;
# 2. the same videos' features again on the CPU, from the GPU run's decoded frames and flow: the relative
#    error of each stream (RGB, flow) between the devices;
# 3. TV-L1 pairs/s and I3D snippets/s by batch size and dtype with peak GPU memory (bench/gpu.py);
# printed as one table at the end and saved to OUT/gpu_smoke.txt.
# VIDLOC_SMOKE_DEVICE=cpu runs the same steps on the CPU (to check the script where there is no GPU);
# SMOKE_ARGS adds snakemake arguments (e.g. "--configfile small.yaml" for a smaller demo).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SNAKEMAKE="$(dirname "$PY")/snakemake"
OUT=${1:-results/gpu_smoke}
DEVICE=${VIDLOC_SMOKE_DEVICE:-cuda}
BATCHES=${SMOKE_BATCHES:-1,8,32,64}
mkdir -p "$OUT"

if [ "$DEVICE" = cuda ]; then
  "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' || {
    echo "gpu_smoke: torch sees no CUDA device here (torch $("$PY" -c 'import torch; print(torch.__version__)')):" \
         "run it on a GPU node, or VIDLOC_SMOKE_DEVICE=cpu to check the script" >&2
    exit 2
  }
fi

echo "== 1/3 the demo on $DEVICE"
start=$(date +%s)
# shellcheck disable=SC2086  # SMOKE_ARGS holds several words on purpose
"$SNAKEMAKE" --cores all ${SMOKE_ARGS:-} --config results_dir="$OUT" preset=demo "flow={device: $DEVICE}" \
  "features={device: $DEVICE}" > "$OUT/demo.log" 2>&1 || { tail -n 30 "$OUT/demo.log"; exit 1; }
echo "$(( $(date +%s) - start ))" > "$OUT/demo_seconds.txt"

echo "== 2/3 the same features on the CPU"
"$PY" - "$OUT/demo" <<'EOF'
import json, subprocess, sys
from pathlib import Path

res = Path(sys.argv[1])
for prov in sorted((res / "features").glob("*.json"))[:3]:
    p = json.loads(prov.read_text())
    v = prov.stem
    subprocess.run([sys.executable, "-m", "pipeline.features", str(res / "decoded" / v / "frames.npy"),
                    "--flow", str(res / "flow" / v / "flow.npy"), "--flow-meta", str(res / "flow" / v / "meta.json"),
                    "--out", str(res / "cpu_features" / f"{v}.npy"), "--provenance", str(res / "cpu_features" / f"{v}.json"),
                    "--settings", json.dumps(p["settings"]), "--runtime", json.dumps({"device": "cpu"}),
                    "--no-progress"], check=True)
EOF

echo "== 3/3 throughput"
"$PY" bench/gpu.py --device "$DEVICE" --batches "$BATCHES" > "$OUT/throughput.txt"

"$PY" - "$OUT" <<'EOF' | tee "$OUT/gpu_smoke.txt"
import json, sys
from pathlib import Path

import numpy as np

out = Path(sys.argv[1])
res = out / "demo"
rows = []
prov = json.loads(next((res / "features").glob("*.json")).read_text())
rows.append(("device", prov.get("device", "?"), ""))
rows.append(("demo end to end", f"{int((out / 'demo_seconds.txt').read_text())} s", "snakemake --cores all"))
for run in sorted((res / "runs").glob("*/metrics.json")):
    m = json.loads(run.read_text())
    rows.append((f"mAP@0.5 {run.parent.name}", f"{m['map']['0.5']:.1f}", "demo test videos"))
for name, cols in (("RGB", slice(0, 1024)), ("flow", slice(1024, None))):
    errs = []
    for cpu in sorted((res / "cpu_features").glob("*.npy")):
        a, b = np.load(cpu)[:, cols], np.load(res / "features" / cpu.name)[:, cols]
        errs.append(float((np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)).max()))
    rows.append((f"features {name}: {prov.get('device', '?')} vs CPU", f"{max(errs):.2e}",
                 f"largest ||x - x_cpu|| / ||x_cpu|| over {len(errs)} videos' snippets"))
print(f"\n{'what':<34}{'value':>14}  note")
for what, value, note in rows:
    print(f"{what:<34}{value:>14}  {note}")
print()
print((out / "throughput.txt").read_text())
EOF
