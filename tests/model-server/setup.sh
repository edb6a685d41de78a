#!/usr/bin/env bash
# Creates the model server's venv and trained model under target/, idempotently: a venv whose
# stamp matches requirements.txt is reused, so only the first run on a machine pays the ~30 s
# pip install (from PyPI). Usage: tests/model-server/setup.sh [VENV_DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/target/model-server-venv}"
python="${PYTHON:-python3}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"

# Test binaries may run this concurrently: one creates, the others wait and reuse.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" > "$stamp"
fi

# The model lives inside the venv dir; a changed train.py retrains (stamp = its hash).
model_dir="$venv/model"
model_stamp="$model_dir/.train.sha256"
want_model="$(sha256sum "$here/train.py" | cut -d' ' -f1)"
if [ ! -f "$model_stamp" ] || [ "$(cat "$model_stamp")" != "$want_model" ]; then
  mkdir -p "$model_dir"
  "$venv/bin/python" "$here/train.py" "$model_dir/model.joblib"
  echo "$want_model" > "$model_stamp"
fi
echo "$venv"
