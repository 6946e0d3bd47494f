#!/usr/bin/env bash
# The real-GPU check (run by hand, or by the `device` tool, on a machine with a GPU):
#   bash bench/gpu_vllm.sh [MODEL_DIR_OR_REPO]
# Installs benchforge[vllm] into a venv, serves a small model that is present locally (a
# snapshot dir, or a repo already in the HF cache; default Qwen/Qwen2.5-Coder-0.5B-Instruct),
# runs `benchforge smoke` and a 20-task HumanEval generate through benchforge's own engine
# launcher, then serves the same model with plain `vllm serve` and runs `vllm bench serve`
# against it, printing both tokens/s side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-Qwen/Qwen2.5-Coder-0.5B-Instruct}
VENV=${VENV:-/tmp/benchforge-gpu-venv}
OUT=${OUT:-/tmp/benchforge-gpu}
mkdir -p "$OUT"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -e ".[vllm]"
export HF_HUB_OFFLINE=1 PATH="$VENV/bin:$PATH"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

common=(model=qwen2.5-coder-7b-instruct model.name=gpu-check "model.hf_repo=$MODEL"
        engine=vllm_native engine.max_model_len=4096 engine.startup_timeout_s=600
        "run.root=$OUT/runs" generate.progress=false)
# The smoke needs the template benchforge renders: the snapshot's tokenizer_config.json.
SNAP=$("$VENV/bin/python" -c "from huggingface_hub import snapshot_download as s; print(s('$MODEL'))")
TEMPLATE="$OUT/chat_template.jinja"
"$VENV/bin/python" - "$SNAP" "$TEMPLATE" <<'PY'
import json, sys, pathlib
snap, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
jinja = snap / "chat_template.jinja"
text = jinja.read_text() if jinja.is_file() else json.loads(
    (snap / "tokenizer_config.json").read_text())["chat_template"]
out.write_text(text)
PY
time benchforge smoke "${common[@]}" "model.chat_template=$TEMPLATE" smoke.prompts=5 | tee "$OUT/smoke.txt"
time benchforge generate "${common[@]}" "model.chat_template=$TEMPLATE" benchmark.limit=20 \
    | tee "$OUT/generate.txt"
python3 - "$OUT/runs" <<'PY'
import json, pathlib, sys
rows = [json.loads(l) for p in pathlib.Path(sys.argv[1]).rglob("samples.jsonl")
        for l in p.read_text().splitlines()]
tokens = sum(r["completion_tokens"] or 0 for r in rows)
print(f"benchforge generate: {len(rows)} samples, {tokens} completion tokens")
PY

# The reference: the same model under plain `vllm serve`, measured by vLLM's own benchmark.
vllm serve "$MODEL" --port 8765 --max-model-len 4096 --gpu-memory-utilization 0.90 \
    --max-num-seqs 64 > "$OUT/vllm-serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do curl -sf localhost:8765/health >/dev/null && break; sleep 1; done
vllm bench serve --model "$MODEL" --port 8765 --dataset-name random --random-input-len 256 \
    --random-output-len 256 --num-prompts 64 --max-concurrency 64 | tee "$OUT/vllm-bench.txt"
echo "== side by side"
grep -h "tokens/s" "$OUT/smoke.txt" || true
grep -h "Output token throughput" "$OUT/vllm-bench.txt" || true
