#!/usr/bin/env bash
# The one test command (README): fetch the models if needed (SmolLM2, the default, and
# Gemma 3 270M), then run every test of the workspace. Tests that need a model fail loudly
# without it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-model.sh all
cargo test --workspace --locked "$@"
