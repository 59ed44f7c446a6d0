#!/usr/bin/env bash
# Every check that needs a CUDA GPU, prepared for a session lent one (15 minutes of device time,
# 10 minutes a call, a minute or two of it to start the machine).
#
#   bash benchmarks/gpu_check.sh --stage          # here, first: copy the corpora it reads into .gpu-data/
#   bash benchmarks/gpu_check.sh [STEP ...]       # on the GPU machine; STEP: tests shakespeare multi30k
#
# The steps' time limits add up to more than one call may run, so two calls:
#   run(command="bash benchmarks/gpu_check.sh tests shakespeare", carry=[".gpu-data"], timeout_s=450)
#   run(command="bash benchmarks/gpu_check.sh multi30k", carry=[".gpu-data"], timeout_s=360)
# Each writes to $OUT (default out/gpu): gpu_check.jsonl (the benchmarks' JSON lines), each step's
# log and training metrics, and env.txt. Each step has its own time limit, so one slow step
# cannot starve the others:
#   tests       tests/test_gpu.py on CUDA (equal to the CPU; bf16 training, resume, generation)  <= 120 s
#   shakespeare configs/shakespeare_char_gpu.toml, nanoGPT's 6 x 384 model (target val loss 1.47):
#               time, time to target, MFU against a bf16 matmul peak measured in the same process  <= 270 s
#   multi30k    configs/multi30k_de_en_base.toml, the paper's base model: BLEU/chrF after
#               GPU_M30K_MINUTES (default 3) of training, beam 4                                  <= minutes + 150 s
# It needs python3 with torch (CUDA), tokenizers, safetensors, tqdm, numpy and sacrebleu; the
# package itself runs from this checkout (PYTHONPATH), so nothing is installed.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ "${1:-}" = "--stage" ]; then
    src=${NANOFORMER_DATA:-../shared/data}
    mkdir -p .gpu-data/tinyshakespeare .gpu-data/multi30k
    cp "$src/tinyshakespeare/input.txt" .gpu-data/tinyshakespeare/
    cp "$src"/multi30k/{train,val,test_2016_flickr,test_2017_flickr}.{de,en} .gpu-data/multi30k/
    grep -qx '/.gpu-data/' .git/info/exclude 2>/dev/null || echo '/.gpu-data/' >> .git/info/exclude
    du -sh .gpu-data
    echo "staged; on the GPU: the two calls at the top of benchmarks/gpu_check.sh"
    exit 0
fi

OUT=${OUT:-$ROOT/out/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ -d .gpu-data ] && export NANOFORMER_DATA=$ROOT/.gpu-data
PY=${PYTHON:-python3}
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests shakespeare multi30k)

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    $PY -c 'import torch, sys; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

status=0
rm -rf /tmp/gpu-shakespeare /tmp/gpu-multi30k-base  # a warm machine keeps them from an earlier call
for step in "${steps[@]}"; do
    start=$(date +%s)
    case $step in
        tests)
            timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py > "$OUT/tests.log" 2>&1
            code=$? ;;
        shakespeare)
            timeout 270 $PY benchmarks/shakespeare.py --only gpu --workdir /tmp/gpu-shakespeare \
                --out "$OUT/gpu_check.jsonl" > "$OUT/shakespeare.log" 2>&1
            code=$?
            cp /tmp/gpu-shakespeare/gpu/metrics.jsonl "$OUT/shakespeare_metrics.jsonl" 2>/dev/null ;;
        multi30k)
            minutes=${GPU_M30K_MINUTES:-3}
            timeout $(( ${minutes%.*} * 60 + 150 )) $PY benchmarks/multi30k.py --config configs/multi30k_de_en_base.toml \
                --minutes "$minutes" --marks "$minutes" --eval-device cuda --batch-size 256 \
                --run-dir /tmp/gpu-multi30k-base --out "$OUT/gpu_check.jsonl" > "$OUT/multi30k.log" 2>&1
            code=$?
            cp /tmp/gpu-multi30k-base/metrics.jsonl "$OUT/multi30k_metrics.jsonl" 2>/dev/null ;;
        *)
            echo "unknown step $step (tests, shakespeare, multi30k)"; status=2; continue ;;
    esac
    [ $code -ne 0 ] && status=1
    echo "$step: exit $code after $(( $(date +%s) - start )) s (log: $OUT/$step.log)"
    tail -n 3 "$OUT/$step.log"
done
exit $status
