#!/usr/bin/env bash
# The README's demo: fetch the default model if needed, build, ask SmolLM2 a question
# through its chat template, and stream the answer. Usage: scripts/demo.sh ["QUESTION"]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-model.sh
cargo build --release --quiet -p pagoda-cli
question=${1:-"What is the capital of France, and what is it famous for?"}
echo "> $question"
printf '%s\n' "$question" | target/release/pagoda chat -n 128 --temp 0
