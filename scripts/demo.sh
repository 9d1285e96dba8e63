#!/usr/bin/env bash
# The end-to-end demo (main job): train the tiny spec on the embedded corpus with every stage
# (tokenizer, data, train, eval, samples), then show the other commands on the result.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { echo; echo "\$ $*"; "$@"; }
run corekit plugins --kind attention
for spec in examples/tiny.toml examples/llama-style.toml examples/gpt2-small.toml; do
  run corekit spec validate "$spec"
done
run corekit spec show examples/tiny.toml
# the main job: every stage of the tiny spec, ending with its int8 ONNX bundle in runs/tiny/export
# (a re-run skips the finished stages)
run corekit run examples/tiny.toml
run corekit eval runs/tiny
run corekit generate runs/tiny --prompt "def fibonacci(n):" --max-new-tokens 64 --temperature 0.8 --top-k 50 --seed 0
run corekit run examples/tiny.toml
# a BPE tokenizer for the same corpus, in a run of its own
run corekit tokenizer train examples/tiny.toml --set tokenizer.name=bpe --set tokenizer.vocab_size=4096 --run-dir runs/tiny-bpe
# an fp32 bundle too, then generation from both with the torch-free edge runtime
run corekit export onnx runs/tiny --out runs/tiny/export-fp32
run corekit-edge runs/tiny/export-fp32 --prompt "def fibonacci(n):" --max-new-tokens 64 --temperature 0.8 --top-k 50 --seed 0
run corekit-edge runs/tiny/export --prompt "def fibonacci(n):" --max-new-tokens 64 --temperature 0.8 --top-k 50 --seed 0
# compression: structured pruning (one of the two KV groups, a quarter of the MLP neurons) with recovery,
# then int4 quantization of the pruned run, its ONNX export, and generation from it
run corekit compress runs/tiny --with prune --set method=structured --set sparsity=0.25 --set recover_steps=100 --out runs/tiny-pruned
run corekit compress runs/tiny-pruned --with quantize --set bits=4 --out runs/tiny-pruned-int4
run corekit export onnx runs/tiny-pruned-int4
run corekit-edge runs/tiny-pruned-int4/export --prompt "def fibonacci(n):" --max-new-tokens 64 --temperature 0.8 --top-k 50 --seed 0
# fine-tuning the demo run: a classifier (is this string of digits sorted?), then instruction tuning
# with LoRA and the chatml template, a chat turn, the merged run exported and run on the edge, and DPO
run corekit finetune examples/finetune/sorted.toml
run corekit classify runs/sorted --text 0123789 --text 97531
run corekit finetune examples/finetune/count.toml
echo; echo "\$ printf 'count 3 after five\\n/exit\\n' | corekit chat runs/count"
printf 'count 3 after five\n/exit\n' | corekit chat runs/count
run corekit finetune runs/count --merge
run corekit export onnx runs/count-merged
run corekit-edge runs/count-merged/export --prompt $'<|im_start|>user\ncount 2 after seven<|im_end|>\n<|im_start|>assistant\n' --temperature 0 --stop "<|im_end|>"
run corekit finetune examples/finetune/shout.toml
echo; echo "loss curves: runs/tiny/curves.png, metrics: runs/tiny/metrics.csv, weights: runs/tiny/model.safetensors, edge bundles: runs/tiny/export (int8), runs/tiny/export-fp32, runs/tiny-pruned-int4/export (pruned, int4); compress reports: runs/tiny-pruned/compress-report.json, runs/tiny-pruned-int4/compress-report.json; fine-tuning reports: runs/sorted/finetune-report.json (+ confusion.png), runs/count/finetune-report.json, runs/shout/finetune-report.json"
