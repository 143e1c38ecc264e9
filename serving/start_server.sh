#!/usr/bin/env bash
# Starts TensorFlow Serving on a towerkit export: the native `tensorflow_model_server` when it is
# on PATH, else the `tensorflow/serving` Docker image.
#
#   serving/start_server.sh MODEL_BASE_PATH [MODEL_NAME]
#
# MODEL_BASE_PATH is the directory towerkit.serving.export() writes numbered versions into (not a
# version directory). MODEL_NAME defaults to "movielens". Environment:
#   GRPC_PORT=8500 REST_PORT=8501   ports (bound on all interfaces; HOST=127.0.0.1 for loopback, docker)
#   BATCHING=1                       --enable_batching with serving/batching_parameters.txt
#   MODEL_CONFIG=path                serve a models.config instead of one model (paths inside it
#                                    are as the server sees them: /models/... under Docker)
#   SKIP_CHECK=1                     do not run `towerkit check-export` first
#   TF_SERVING_IMAGE=tensorflow/serving:2.20.0   Docker image (CPU)
#   POLL_SECONDS=5                   how often the server looks for new versions
#   INTER_OP=-1                      --tensorflow_inter_op_parallelism (-1: each request's ops run
#                                    in its own request thread; default: TF Serving's pool)
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
BASE=$(realpath "$1")
NAME=${2:-movielens}
GRPC_PORT=${GRPC_PORT:-8500}
REST_PORT=${REST_PORT:-8501}
POLL_SECONDS=${POLL_SECONDS:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
IMAGE=${TF_SERVING_IMAGE:-tensorflow/serving:2.20.0}

[ -d "$BASE" ] || { echo "start_server.sh: $BASE is not a directory" >&2; exit 2; }
if [ -f "$BASE/saved_model.pb" ]; then
  echo "start_server.sh: $BASE is a version directory; pass its parent (the model base path)." >&2
  exit 2
fi

# Refuse exports stock TF Serving cannot load (e.g. ScaNN custom ops) before starting anything.
if [ -z "${SKIP_CHECK:-}" ] && command -v towerkit >/dev/null 2>&1; then
  towerkit check-export "$BASE" || {
    echo "start_server.sh: towerkit check-export says stock TF Serving cannot serve $BASE" \
         "(SKIP_CHECK=1 to start anyway)." >&2
    exit 1
  }
fi

flags=(--port="$GRPC_PORT" --rest_api_port="$REST_PORT"
       --file_system_poll_wait_seconds="$POLL_SECONDS"
       --monitoring_config_file=CONFIG_DIR/monitoring.config)
if [ -n "${INTER_OP:-}" ]; then
  flags+=(--tensorflow_inter_op_parallelism="$INTER_OP")
fi
if [ -n "${BATCHING:-}" ]; then
  flags+=(--enable_batching --batching_parameters_file=CONFIG_DIR/batching_parameters.txt)
fi

if command -v tensorflow_model_server >/dev/null 2>&1; then
  flags=("${flags[@]//CONFIG_DIR/$HERE}")
  if [ -n "${MODEL_CONFIG:-}" ]; then
    flags+=(--model_config_file="$(realpath "$MODEL_CONFIG")" --model_config_file_poll_wait_seconds=60)
  else
    flags+=(--model_name="$NAME" --model_base_path="$BASE")
  fi
  echo "+ tensorflow_model_server ${flags[*]}" >&2
  exec tensorflow_model_server "${flags[@]}"
fi

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  flags=("${flags[@]//CONFIG_DIR//config}")
  mounts=(-v "$BASE:/models/$NAME:ro" -v "$HERE:/config:ro")
  if [ -n "${MODEL_CONFIG:-}" ]; then
    mounts+=(-v "$(realpath "$MODEL_CONFIG"):/config/models.config:ro")
    flags+=(--model_config_file=/config/models.config --model_config_file_poll_wait_seconds=60)
  else
    flags+=(--model_name="$NAME" --model_base_path="/models/$NAME")
  fi
  HOST=${HOST:-0.0.0.0}
  echo "+ docker run tensorflow/serving ${flags[*]}" >&2
  # Bypass the image's entrypoint script (it adds its own --model_name/--model_base_path).
  exec docker run --rm --name "towerkit-serving-$NAME" \
    -p "$HOST:$GRPC_PORT:$GRPC_PORT" -p "$HOST:$REST_PORT:$REST_PORT" \
    "${mounts[@]}" --entrypoint tensorflow_model_server "$IMAGE" "${flags[@]}"
fi

echo "start_server.sh: neither tensorflow_model_server nor a working Docker engine was found." \
     "Install TF Serving (https://www.tensorflow.org/tfx/serving/setup) or Docker." >&2
exit 127
