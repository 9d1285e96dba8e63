#!/usr/bin/env bash
# The end-to-end demo (main job). Until training lands it validates and sizes every
# example spec, generates from randomly initialised models, and prepares the tokenizer
# and token shards of the embedded corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { echo; echo "\$ $*"; "$@"; }
run corekit plugins
for spec in examples/tiny.toml examples/llama-style.toml examples/gpt2-small.toml; do
  run corekit spec validate "$spec"
done
run corekit spec show examples/tiny.toml
run corekit generate examples/tiny.toml --prompt "def fibonacci(n):" --max-new-tokens 48 --seed 0
run corekit generate examples/llama-style.toml --prompt "Hello" --prompt "import os" --max-new-tokens 24 --temperature 0
# the data path: tokenizer and token shards of the embedded corpus (a re-run does no work)
run corekit data prepare examples/tiny.toml
run corekit data prepare examples/tiny.toml
run corekit tokenizer train examples/tiny.toml --set tokenizer.name=bpe --set tokenizer.vocab_size=4096 --run-dir runs/tiny-bpe
run corekit generate runs/tiny-bpe --prompt "import os" --max-new-tokens 16 --temperature 0
