#!/bin/bash
# Quantifind's critical-ratio table (docs/algorithms/uniform.md "Critical ratios"): trains its
# four models once each (examples/quantifind/*.toml and the language-names transformer), every
# parameter swept as Quantifind quantises them; then, from each trained network (training.epochs
# = 0, topology.weights = the trained unit), sweeps the uniform quantiser over the weights of
# each layer type; prints the table of loss ratios.
#
#   tools/docs/critical_ratio.sh [LOGS]      (LOGS: where the units go, default logs/critical_ratio)
#
# QLHOST picks the binary (default build/bin/qlhost). About 25 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
qlhost=${QLHOST:-build/bin/qlhost}
logs=$(realpath -m "${1:-logs/critical_ratio}")
mkdir -p "$logs"
results=()

# train NAME EXPERIMENT [--set ...]: one trained unit, its sweep over every parameter (kept
# from an earlier call with the same LOGS when that unit finished).
train() {
  local name=$1 experiment=$2
  shift 2
  if ! [ -f "$logs/$name.unit" ] || ! grep -q "^status = 'done'" "$(head -n 1 "$logs/$name.unit")/unit.toml"; then
    "$qlhost" run "$experiment" --set "storage.logs=\"$logs\"" --set 'algorithm.0.parameters="all"' "$@" \
      --unit-file "$logs/$name.unit"
  fi
  results+=("$(head -n 1 "$logs/$name.unit")")
}

# from_trained NAME EXPERIMENT [--set ... | --grid ...]: sweeps from NAME's trained float
# weights (its last checkpoint: the unit folder itself would give its 8-bit kept result).
from_trained() {
  local name=$1 experiment=$2
  shift 2
  "$qlhost" sweep "$experiment" --set "storage.logs=\"$logs\"" --set training.epochs=0 \
    --set "topology.weights=\"$(head -n 1 "$logs/$name.unit")/fold0/checkpoints/last.pt\"" \
    --set 'algorithm.0.parameters="weights"' "$@" | tee "$logs/$name.sweep.log"
  results+=("$(sed -n 's/^sweep of .* units -> //p' "$logs/$name.sweep.log")")
}

train dense_mnist examples/quantifind/dense_mnist.toml
from_trained dense_mnist examples/quantifind/dense_mnist.toml --grid 'algorithm.0.layers=[["*"],["fc*"],["classifier"]]'
train conv_mnist examples/quantifind/conv_mnist.toml
from_trained conv_mnist examples/quantifind/conv_mnist.toml \
  --grid 'algorithm.0.layers=[["*"],["features.*"],["classifier.*"]]'
train linear_map examples/quantifind/linear_map.toml
from_trained linear_map examples/quantifind/linear_map.toml --grid 'algorithm.0.layers=[["*"]]'
transformer=(examples/language_names_transformer.toml --set algorithm.0.max_bits=8)
train transformer "${transformer[@]}"
from_trained transformer "${transformer[@]}" --grid 'algorithm.0.layers=[["*"],["*attention*"],["*ff*"],["classifier"]]'
# The transformer's parameters outside its Linear layers (embeddings, layer norms, biases) alone.
from_trained transformer "${transformer[@]}" --set 'algorithm.0.parameters="all"' --grid 'algorithm.0.layers=[[]]'

"${PYTHON:-python3}" tools/docs/critical_ratio_table.py "${results[@]}"
