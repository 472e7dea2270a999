#!/usr/bin/env bash
# `make demo`: a whole GAD Studio on this machine, running a real distillation.
#  1. migrate; demo team and user
#  2. build a tiny teacher and train it for a minute on the bundled demo prompts; build a
#     tiny student and pretrain it for half a minute on prompts the demo does not
#     distil on, so it starts weak but coherent (all offline: nothing is downloaded;
#     both are cached under $GAD_DATA_DIR/models)
#  3. serve the teacher with `transformers serve` on loopback
#  4. start the web server, a Celery worker and celery beat
#  5. register the teacher and the prompt set; launch a GAD job and its SeqKD pair
#  6. when both have finished: an evaluation on the held-out prompts (teacher, student
#     before distillation, GAD, SeqKD) and an annotation campaign for the demo user
# Ctrl-C stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."

export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/gad}"
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/1}"
export GAD_DATA_DIR="${GAD_DATA_DIR:-$PWD/var/demo}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Small models on a small machine: one BLAS thread per process beats threads that spin
# against each other (measured: 15x faster training steps on 2 busy cores).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
PY=.venv/bin/python
HOST="${GAD_DEMO_HOST:-127.0.0.1}"
PORT="${GAD_DEMO_PORT:-8000}"
TEACHER_PORT="${GAD_DEMO_TEACHER_PORT:-8001}"
MODELS="$GAD_DATA_DIR/models"
LOGS="$GAD_DATA_DIR/logs"
# The demo's student is a registered model (model:demo-student) under this root.
export GAD_MODEL_ROOTS="${GAD_MODEL_ROOTS:-$MODELS}"
mkdir -p "$MODELS" "$LOGS"

# Every process the demo starts is in pids; cleanup stops them on Ctrl-C (SIGINT to the
# terminal's group), on SIGTERM or SIGHUP (`kill %1` of a backgrounded `make demo &`, a
# closed terminal), on an error, and at the end. Long steps run in the background and are
# waited for: bash runs a trap only once the foreground command returns.
pids=()
cleanup() {
  local code=$1
  trap '' INT TERM HUP
  trap - EXIT
  echo; echo "demo: stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 20); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit "$code"
}
trap 'cleanup 130' INT
trap 'cleanup 143' TERM
trap 'cleanup 129' HUP
trap 'cleanup $?' EXIT
# `make` killed alone (its children are not signalled): stop too, rather than run on.
parent=$PPID
( trap - INT TERM HUP EXIT; while kill -0 "$parent" 2>/dev/null; do sleep 1; done
  kill -TERM $$ 2>/dev/null ) &
pids+=($!)
step() { printf '\n== %s\n' "$*"; }

step "database"
$PY manage.py migrate --noinput -v0
login=$($PY manage.py demo_setup)

if [ ! -f "$MODELS/texts.txt" ]; then
  # What the tiny models' tokenizers are trained on.
  $PY - "$MODELS/texts.txt" <<'PYTHON'
import json, sys
with open(sys.argv[1], "w") as out:
    for line in open("demo/prompts.jsonl"):
        record = json.loads(line)
        out.write(record["prompt"] + "\n" + record["teacher_response"] + "\n")
PYTHON
fi
if [ ! -d "$MODELS/teacher" ]; then
  step "building and training the tiny teacher (a minute or two)"
  $PY -m trainer build-tiny --out "$MODELS/teacher-base" --texts "$MODELS/texts.txt" \
      --layers 4 --hidden 128 --heads 4 --vocab 1024 --seed 1
  $PY -m trainer run --config demo/teacher.yaml \
      --set student="$MODELS/teacher-base" --set output_dir="$MODELS/teacher-run" \
      > "$LOGS/teacher-training.log" 2>&1
  cp -rL "$MODELS/teacher-run/final" "$MODELS/teacher.tmp" && mv "$MODELS/teacher.tmp" "$MODELS/teacher"
fi
if [ ! -d "$MODELS/student-pretrained" ]; then
  step "building the tiny student and pretraining it (half a minute)"
  # The last 1280 prompts with their reference answers; the demo distils on the first
  # 240 (demo_launch --train 200 --test 40), records the student has not seen (a short
  # question such as a capital's can still recur: the file draws from 8 templates).
  tail -n 1280 demo/prompts.jsonl > "$MODELS/student-corpus.jsonl"
  $PY -m trainer build-tiny --out "$MODELS/student-base" --texts "$MODELS/texts.txt" \
      --layers 2 --hidden 64 --heads 4 --vocab 1024 --seed 2
  $PY -m trainer run --config demo/student.yaml \
      --set student="$MODELS/student-base" --set train_file="$MODELS/student-corpus.jsonl" \
      --set output_dir="$MODELS/student-run" > "$LOGS/student-pretraining.log" 2>&1
  rm -rf "$MODELS/student.tmp"  # left by an interrupted run
  cp -rL "$MODELS/student-run/final" "$MODELS/student.tmp"
  mv "$MODELS/student.tmp" "$MODELS/student-pretrained"
fi

step "starting the teacher, the worker, the scheduler and the web server"
.venv/bin/transformers serve "$MODELS/teacher" --host 127.0.0.1 --port "$TEACHER_PORT" \
    --device cpu > "$LOGS/teacher.log" 2>&1 &
pids+=($!)
.venv/bin/celery -A webapp worker -Q cpu,imports --pool threads --concurrency 4 --loglevel INFO -n demo@%h \
    > "$LOGS/worker.log" 2>&1 &
pids+=($!)
.venv/bin/celery -A webapp beat --loglevel INFO -s "$GAD_DATA_DIR/celerybeat-schedule" \
    > "$LOGS/beat.log" 2>&1 &
pids+=($!)
$PY manage.py runserver "$HOST:$PORT" --noreload > "$LOGS/web.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 120); do
  curl -fsS -o /dev/null "http://127.0.0.1:$TEACHER_PORT/health" 2>/dev/null \
    && curl -fsS -o /dev/null "http://$HOST:$PORT/accounts/login/" 2>/dev/null && break
  sleep 1
done

step "registering the teacher and the prompts; launching GAD and SeqKD"
$PY manage.py demo_launch --teacher-url "http://127.0.0.1:$TEACHER_PORT/v1" \
    --teacher-model "$MODELS/teacher" --student "$MODELS/student-pretrained" \
    --prompts demo/prompts.jsonl

cat <<MSG

  GAD Studio is running at http://$HOST:$PORT/   (jobs: http://$HOST:$PORT/teams/demo/jobs/)
  Demo $login
  Logs: $LOGS

  Press Ctrl-C to stop everything.
MSG

step "waiting for the jobs; then an evaluation of the held-out prompts and a campaign"
$PY manage.py demo_launch --evaluate --site "http://$HOST:$PORT" &
pids+=($!)
if wait $!; then
  echo "demo: jobs finished, evaluation and campaign ready ${SECONDS}s after the start"
else
  echo "demo: no evaluation (see above); the site keeps running"
fi
wait
