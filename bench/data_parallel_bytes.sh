#!/bin/sh
# Bytes a rank sends per step in data-parallel training with 2 ranks on this host: the fp32
# all-reduce (no codec) against the nuqsgd codecs' all-gather of packed streams, on
# Fashion-MNIST (MLP 784-256-128-10, global batch 128, one epoch). Two measures per run: the
# ring traffic the trainer counts (train/sent_bytes_per_step in metrics.h5) and, independently,
# the growth of the loopback interface's transmitted bytes in /proc/net/dev over the run
# (both ranks, rendezvous and anything else on lo included) divided by 2 ranks x steps. The
# counted bytes include ALQ's fp32 gradient gathers at its update steps.
# Usage: bench/data_parallel_bytes.sh [BUILD_DIR]
set -eu
build=$(cd "${1:-build}" && pwd)
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/quantlab-bench-dp.XXXXXX)
trap 'rm -rf "$work"' EXIT

lo_tx() { awk '$1 == "lo:" {print $10}' /proc/net/dev; }

write_experiment() {  # $1: the [[algorithm]] block or ""
  cat > "$work/exp.toml" <<TOML
[experiment]
seed = 1
[storage]
logs = "$work/logs"
[problem]
plugin = "mnist"
[topology]
plugin = "mlp"
hidden = [256, 128]
[training]
epochs = 1
batch_size = 128
[training.optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9
[run]
threads = 1
$1
TOML
}

echo "data-parallel, 2 ranks on loopback, Fashion-MNIST, MLP 784-256-128-10 (235 146 parameters), batch 64 a rank"
echo "| gradient exchange | sent bytes/step (counted) | lo bytes/step (measured) | fewer than fp32 all-reduce | test top-1 |"
echo "| --- | ---: | ---: | ---: | ---: |"
baseline=""
for scheme in none-allreduce qsgd:4:8192 qsgd:4:512 nuq:4:512 nuq:3:512 qsgdinf:3:512 alq:3:512; do
  if [ "$scheme" = none-allreduce ]; then
    write_experiment ""
    label="fp32 all-reduce (no codec)"
  else
    IFS=: read -r name bits bucket <<SPEC
$scheme
SPEC
    write_experiment "[[algorithm]]
plugin = \"nuqsgd\"
scheme = \"$name\"
bits = $bits
bucket_size = $bucket
update_steps = \"50,200,400\""
    label="$name $bits bits, buckets of $bucket, all-gather"
  fi
  before=$(lo_tx)
  "$build/bin/qlhost" run "$work/exp.toml" --nproc 2 > "$work/run.log" 2>&1 || { cat "$work/run.log"; exit 1; }
  after=$(lo_tx)
  unit=$(ls -d "$work"/logs/mnist/mlp/exp* | tail -1)
  /usr/bin/python3 - "$unit" "$before" "$after" "$label" "${baseline:-0}" > "$work/row" <<'PY'
import sys, h5py
unit, before, after, label, baseline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
with h5py.File(unit + "/fold0/metrics.h5", "r") as f:
    sent = float(f["train/sent_bytes_per_step"][-1]["value"])
    steps = int(f["train/loss_step"][-1]["step"])
import re
top1 = re.search(r"trained_top1 = ([0-9.]+)", open(unit + "/unit.toml").read())
measured = (after - before) / 2 / steps
ratio = "1.0x" if baseline == 0 else "%.1fx" % (baseline / sent)
print("%s|%d|%.0f|%s|%s" % (label, sent, measured, ratio, "%.2f %%" % (100 * float(top1.group(1))) if top1 else "-"))
PY
  row=$(cat "$work/row")
  [ -z "$baseline" ] && baseline=$(echo "$row" | cut -d'|' -f2)
  echo "| $(echo "$row" | sed 's/|/ | /g') |"
done
