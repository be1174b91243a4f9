#!/usr/bin/env bash
# Client-side balancing, measured (docs/scaling.md): three cifar10-serve replicas of the
# bundled model on loopback; cifar10-batch sends 3000 single-image calls across them (each
# replica's share from its metrics), then 3000 images in batches of 16 while replica 1 is
# SIGKILLed (images lost or duplicated in the output).
#   bench/replicas.sh DATA   DATA: an image folder with one sub-folder per class
set -u
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
DATA=$(realpath "${1:?usage: bench/replicas.sh DATA (an image folder of class folders)}")
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
for c in $(ls "$DATA"); do  # 300 images per class, as links
  mkdir -p $D/images/$c
  ls "$DATA/$c" | head -300 | while read f; do ln -s "$DATA/$c/$f" $D/images/$c/$f; done
done
pids=()
for i in 0 1 2; do
  cifar10-serve --host 127.0.0.1 --port 860$i --http-port 862$i --metrics-port 861$i --threads 1 --instances 1 --log-level WARNING 2>$D/serve$i.log &
  pids+=($!)
done
for i in 0 1 2; do cifar10-client --address 127.0.0.1:860$i --timeout 60 health; done
count() { curl -s localhost:861$1/metrics | awk '/^cifar10_requests_total\{code="OK",method="Classify"\}/ {print $2}'; }
echo "== share: 3000 single-image calls"
time cifar10-batch $D/images -o $D/share.jsonl --batch-size 1 --concurrency 4 --no-progress --no-confusion-matrix \
  --address 127.0.0.1:8600,127.0.0.1:8601,127.0.0.1:8602 | tail -2
for i in 0 1 2; do echo "replica $i: $(count $i) Classify calls"; done
echo "== kill: batches of 16, replica 1 SIGKILLed once 480 images are written"
cifar10-batch $D/images -o $D/kill.jsonl --batch-size 16 --concurrency 4 --no-progress --no-confusion-matrix \
  --address 127.0.0.1:8600 --address 127.0.0.1:8601,127.0.0.1:8602 > $D/kill.out 2>&1 &
batch=$!
until [ "$(cat $D/kill.jsonl 2>/dev/null | wc -l)" -ge 480 ]; do sleep 0.05; done
answered=$(count 1)
kill -9 ${pids[1]}
echo "killed replica 1 after $(wc -l < $D/kill.jsonl) images were written (it had answered $answered calls in all)"
wait $batch; echo "cifar10-batch exit status: $?"; tail -3 $D/kill.out
python -c "import json; items=[json.loads(l)['item'] for l in open('$D/kill.jsonl')]; print(f'{len(items)} lines, {len(set(items))} distinct images of 3000: {3000-len(set(items))} lost, {len(items)-len(set(items))} duplicated')"
for i in 0 2; do echo "replica $i: $(count $i) Classify calls in all"; done
kill ${pids[0]} ${pids[2]}; wait ${pids[0]} ${pids[2]}
