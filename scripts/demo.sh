#!/usr/bin/env bash
# The end-to-end demo (main job). Until training lands it validates and sizes every
# example spec and generates from a randomly initialised tiny model.
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
