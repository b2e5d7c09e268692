#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one run of under 10 minutes and one report (bench/README.md, "GPU check"):
# the device; the CUDA-only tests; the packed-cells bench (MLP width 128 and 512, K = 8...64, against the per-cell
# baseline, with the fraction of a float32 GEMM's FP32 and TF32 rate); a paper-size pack (width 512, K = 64, 500
# steps of 28x28 inputs); MNIST-1M's generator at the paper's settings (training steps/s, sampling images/s, the
# hours for MNIST-1M); the online stream on the device; the unit tier on the GPU machine.
#
#   bash bench/gpu_check.sh [DIR]                           # the report in DIR (default: $OUT, else results/gpu_check)
#   GPU_CHECK_SMOKE=1 bash bench/gpu_check.sh /tmp/smoke    # tiny sizes on the CPU: the script itself, end to end
#
# DIR gets report.md, summary.json, each part's log (<part>.log) and the benches' JSON. Each part runs under
# `timeout`, at most its share of GPU_CHECK_BUDGET (seconds for all parts, default 540) and never more than is left;
# a part that fails or runs out of time is recorded and the next one runs. GPU_CHECK_PARTS: the parts to run (default
# all, in this order: env cuda-tests packed-cells paper-pack generator stream unit-tier). PYTHON: the interpreter
# (default .venv/bin/python where there is one, else python3). Exit status 1 when a part did not pass.
set -uo pipefail
out=${1:-${OUT:-}}
[[ -n $out ]] && out=$(realpath -m -- "$out")  # relative to where it was called from
cd "$(dirname "$0")/.." || exit
out=${out:-$PWD/results/gpu_check}
mkdir -p "$out"
export GPU_CHECK_SMOKE=${GPU_CHECK_SMOKE:-0}
budget=${GPU_CHECK_BUDGET:-540}
parts=${GPU_CHECK_PARTS:-env cuda-tests packed-cells paper-pack generator stream unit-tier}
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python3
    [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # gammasweep for an interpreter that has only its requirements
if [[ $GPU_CHECK_SMOKE == 1 ]]; then
    export CUDA_VISIBLE_DEVICES=""  # the CPU, even on a GPU machine
fi

# the device, and whether torch can use it (the other parts would run on the CPU otherwise)
env_report='
import os, platform, shutil, subprocess
import torch
print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
print(f"host {platform.node()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}, {p.multi_processor_count} SMs")
if shutil.which("nvidia-smi"):
    query = ["--query-gpu=name,driver_version,clocks.max.sm,power.limit", "--format=csv"]
    print(subprocess.run(["nvidia-smi", *query], capture_output=True, text=True).stdout)
if not torch.cuda.is_available() and os.environ["GPU_CHECK_SMOKE"] != "1":
    raise SystemExit("no CUDA device: torch.cuda.is_available() is False")
'

# part name -> its share of the budget (seconds) and its command, full size or smoke
declare -A share=([env]=60 [cuda-tests]=120 [packed-cells]=150 [paper-pack]=90 [generator]=150 [stream]=90
    [unit-tier]=300)
# the tests that skip without CUDA: on a GPU none may skip
cuda_tests=(tests/unit/test_augment.py::test_augment_on_cuda
    tests/unit/test_data.py::test_a_stream_on_a_gpu_serves_the_host_batches_there)
bench=("$PYTHON" bench/packed_cells.py --peak --cnn)
if [[ $GPU_CHECK_SMOKE == 1 ]]; then
    packed_cells=("${bench[@]}" --inputs 8x8x1 --widths 32 --sizes 2 4 --steps 4)
    paper_pack=("${bench[@]}" --inputs 8x8x1 --widths 64 --sizes 4 --steps 20 --packed-only)
    generator=("$PYTHON" bench/generator.py config/config.yaml digits --train-steps 6 --train-images 256 --images 16)
    stream=("$PYTHON" bench/online_stream.py --steps 70 --trainer-steps 2)
    unit_tier=("$PYTHON" -m pytest -p no:cacheprovider -q -rs tests/unit/test_augment.py)
else
    packed_cells=("${bench[@]}" --inputs 8x8x1 28x28x1 --widths 128 512 --sizes 8 16 32 64)
    paper_pack=("${bench[@]}" --inputs 28x28x1 --widths 512 --sizes 64 --steps 500 --packed-only)
    generator=("$PYTHON" bench/generator.py config/paper.yaml mnist1m)
    stream=("$PYTHON" bench/online_stream.py)
    unit_tier=("$PYTHON" -m pytest -p no:cacheprovider -q -rs tests/unit)
fi

command_of() {  # the command of part $1, as words
    case $1 in
        env) words=("$PYTHON" -c "$env_report") ;;
        cuda-tests) words=("$PYTHON" -m pytest -p no:cacheprovider -q -rs "${cuda_tests[@]}") ;;
        packed-cells) words=("${packed_cells[@]}" --json "$out/packed_cells.json") ;;
        paper-pack) words=("${paper_pack[@]}" --json "$out/paper_pack.json") ;;
        generator) words=("${generator[@]}" --json "$out/generator.json") ;;
        stream) words=("${stream[@]}" --json "$out/online_stream.json") ;;
        unit-tier) words=("${unit_tier[@]}") ;;
        *) return 1 ;;
    esac
}

start=$SECONDS
rows=() json=() failed=0
declare -A statuses
for part in $parts; do
    log="$out/$part.log"
    if ! command_of "$part"; then
        echo "gpu_check: unknown part '$part'" | tee "$log" >&2
        statuses[$part]="unknown part" failed=1
        rows+=("| $part | unknown part | 0 | |") json+=("{\"part\": \"$part\", \"status\": \"unknown part\"}")
        continue
    fi
    left=$((budget - (SECONDS - start)))
    limit=$((share[$part] < left ? share[$part] : left))
    t0=$SECONDS
    if ((limit < 5)); then
        status="not run: the budget was spent" rc=-1
        echo "$status" >"$log"
    else
        echo "gpu_check: $part (at most ${limit} s)" >&2
        timeout --kill-after=10 "$limit" "${words[@]}" >"$log" 2>&1
        rc=$?
        case $rc in
            0) status=passed ;;
            124 | 137) status="timed out after ${limit} s" ;;
            *) status="failed (exit $rc)" ;;
        esac
        if [[ $rc -eq 0 && $part == cuda-tests && $GPU_CHECK_SMOKE != 1 ]] && grep -qE '[0-9]+ skipped' "$log"; then
            status="failed: CUDA tests skipped" rc=1  # pytest counts a skip as a pass
        fi
    fi
    [[ $rc -eq 0 ]] || failed=1
    statuses[$part]=$status
    took=$((SECONDS - t0))
    last=$(grep -v -e '^\s*$' -e '^|---' "$log" | tail -n 1 | tr '|' '/' | cut -c 1-160)
    rows+=("| $part | $status | $took | $last |")
    json+=("{\"part\": \"$part\", \"status\": \"$status\", \"exit\": $rc, \"seconds\": $took, \"limit\": $limit}")
done

mode="CUDA"
[[ $GPU_CHECK_SMOKE == 1 ]] && mode="smoke (tiny sizes, CPU)"
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git status --porcelain 2>/dev/null) ]] && revision+=" (with uncommitted changes)"
{
    echo "# GPU check"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(hostname), revision $revision, mode: $mode;"
    echo "$((SECONDS - start)) s of a ${budget} s budget. Raw output: \`<part>.log\` and the benches' JSON beside this file."
    echo
    echo "| part | status | seconds | last line of its output |"
    echo "|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    for part in $parts; do
        log="$out/$part.log"
        echo
        echo "## $part"
        echo
        table=$(grep '^|' "$log")
        if [[ -n $table ]]; then  # a bench: its device line and table
            grep '^device:' "$log" && echo
            printf '%s\n\n' "$table"
        fi
        if [[ ${statuses[$part]} != passed || -z $table ]]; then  # the end of anything else
            echo '```text'
            tail -n 25 "$log"
            echo '```'
        fi
    done
} >"$out/report.md"
{
    echo "{\"mode\": \"$mode\", \"revision\": \"$revision\", \"budget\": $budget, \"seconds\": $((SECONDS - start)),"
    echo " \"parts\": ["
    (IFS=,; echo "  ${json[*]}")
    echo " ]}"
} >"$out/summary.json"
echo "gpu_check: report in $out/report.md ($((SECONDS - start)) s)" >&2
exit "$failed"
