#!/usr/bin/env bash
# GPU readiness of issue 16 (micro-batching, Ray Train workers, autocast) in one short run.
#
#   benchmarks/gpu_check.sh                 # from the repository root, with the venv in .venv
#   PY=/path/to/python OUT=/tmp/gpu-check benchmarks/gpu_check.sh
#
# Needs >= 1 CUDA GPU, the harness installed with the ray extra, no network (random init, synthetic
# shapes data). About 10 minutes on one H200; each stage has its own time limit. It prints, for
# benchmarks/README.md ("GPU numbers"): the machine line, the equality check, the suite's table
# (samples/s, CUDA peak, loss per run) and the scale.py table.
#
# Stages:
#   1. GradCache on CUDA, fp32: harness-tiny-vit, 3 steps, micro_batch 5 vs unchunked (max |dparam|).
#   2. A coco-finetune-shaped suite on synthetic data at ViT-B/32 size (random init, embed_dim 64,
#      clip at T=0.01 / cua / cuaxu, 224 px input upscaled from 64 px shapes), batch 4096 in
#      micro-batches of 512: bf16, fp16 (GradScaler), and with >= 2 GPUs, 2 workers x 1 GPU (nccl).
#   3. benchmarks/scale.py on CUDA, ViT-B/32 bf16: batch 1024 and 4096, micro_batch 512 vs unchunked.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
HARNESS=${HARNESS:-$(dirname "$PY")/harness}
OUT=${OUT:-$(mktemp -d /tmp/harness-gpu-check.XXXX)}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT"

echo "== machine"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader || { echo "no nvidia-smi: not a GPU machine"; exit 2; }
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
$PY -c "import torch, ray; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'ray', ray.__version__, 'gpus', torch.cuda.device_count())"
git rev-parse --short HEAD 2>/dev/null || true
[ "$NGPU" -ge 1 ] || { echo "torch sees no CUDA GPU"; exit 2; }

echo; echo "== 1. GradCache equals the unchunked step on CUDA (fp32, tiny-vit, 3 steps)"
timeout 300 $PY - <<'EOF'
import torch, harness
from harness.config import TrainConfig
from harness.runner import seed_everything
from harness.training import train
pairs = harness.create_dataset("shapes", train_size=64, eval_size=16).train_pairs()
def run(micro):
    seed_everything(0)
    enc, loss = harness.create_encoder("open_clip", model="harness-tiny-vit"), harness.create_loss("clip")
    train(enc, loss, pairs, TrainConfig(steps=3, batch_size=12, lr=5e-4, warmup=1, micro_batch=micro, device="cuda"), 0, torch.device("cuda"))
    return [p.detach().float().cpu() for p in list(enc.model.parameters()) + list(loss.parameters())]
a, b = run(None), run(5)
d = max(float((x - y).abs().max()) for x, y in zip(a, b))
print(f"max |param difference| after 3 steps, micro_batch 5 vs unchunked: {d:.2e} ({'ok' if d <= 1e-5 else 'ABOVE 1e-5'})")
EOF

echo; echo "== 2. coco-finetune-shaped suite, ViT-B/32 size, batch 4096, micro_batch 512"
suite() {  # name precision resources objectives
  cat > "$OUT/$1.yaml" <<EOF
name: $1
objectives: $4
encoders: [{name: open_clip, label: vit-b-32-d64, params: {model: ViT-B-32, embed_dim: 64}}]
datasets: [{name: shapes, params: {image_size: 64, train_size: 8192, eval_size: 512}}]
train: {steps: 8, batch_size: 4096, micro_batch: 512, lr: 1.0e-6, weight_decay: 0.1, betas: [0.9, 0.99],
        warmup: 2, precision: $2, device: cuda, log_every: 4, eval_batch_size: 512}
seeds: [24]
evaluations: [gap, retrieval, zeroshot_classification]
resources: $3
EOF
}
THREE='[{name: clip, label: clip_t0.01, params: {temperature: 0.01, learnable_temperature: false}}, cua, cuaxu]'
CLIP='[{name: clip, label: clip_t0.01, params: {temperature: 0.01, learnable_temperature: false}}]'
suite gpu-bf16 bf16 "{gpus_per_job: 1, cpus_per_job: 8}" "$THREE"
suite gpu-fp16 fp16 "{gpus_per_job: 1, cpus_per_job: 8}" "$CLIP"
RUNS=(gpu-bf16 gpu-fp16)
if [ "$NGPU" -ge 2 ]; then
  suite gpu-2workers bf16 "{workers_per_job: 2, gpus_per_worker: 1, cpus_per_job: 8}" "$CLIP"
  RUNS+=(gpu-2workers)
else
  echo "(one GPU: the 2-worker nccl run is skipped)"
fi
for s in "${RUNS[@]}"; do
  echo "-- $s"
  timeout 420 "$HARNESS" run "$OUT/$s.yaml" --out "$OUT/runs" 2>&1 | grep -E "^\[|suite done|error" || true
done
$PY - "$OUT/runs" <<'EOF'
import json, sys
from pathlib import Path
rows = []
for r in sorted(Path(sys.argv[1]).glob("*/*/result.json")):
    d = json.loads(r.read_text()); env, m = d["env"], d["metrics"].get("train", {})
    rows.append([d["job"]["suite"], d["job"]["objective"]["label"] or d["job"]["objective"]["name"], d["status"],
                 env.get("workers_per_job"), env.get("micro_batch"), env.get("precision"),
                 f"{m.get('samples_per_s', 0):.0f}", env.get("cuda_peak_mb"), env.get("cuda_peak_mb_per_worker", ""),
                 f"{m.get('final_loss', float('nan')):.4f}", f"{env.get('wall_time_s', 0):.0f}", (d.get("error") or "")[:80]])
print("| suite | objective | status | workers | micro | precision | samples/s | CUDA peak MB | per worker | final loss | wall s | error |")
print("|---|---|---|---:|---:|---|---:|---:|---|---:|---:|---|")
for row in rows:
    print("| " + " | ".join(str(x) for x in row) + " |")
EOF

echo; echo "== 3. scale.py on CUDA: ViT-B/32 bf16, micro_batch 512 vs unchunked"
timeout 420 $PY benchmarks/scale.py --device cuda --precision bf16 --model ViT-B-32 --image-size 64 \
  --batches 1024,4096 --micro-batch 512 --workers 1 --steps 3 --max-gb 120 --threads 8

echo; echo "results under $OUT"
