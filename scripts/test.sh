#!/usr/bin/env bash
# The one test command (README): fetch the default model if needed, then run
# every test of the workspace. Tests that need the model fail loudly without it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-model.sh
cargo test --workspace --locked "$@"
