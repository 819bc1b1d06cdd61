#!/usr/bin/env bash
# Create .venv and install vbank with its test tools, if not done yet (idempotent, fast when nothing changed).
# dlib comes as the prebuilt `dlib-bin` wheel: constraints/overrides.txt removes face-recognition's
# `dlib` requirement so that nothing is compiled from source.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VBANK_VENV:-.venv}"
PY="${PYTHON:-python3}"
stamp="$VENV/.vbank-installed"
want="$(cat pyproject.toml constraints/overrides.txt | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if ! command -v uv >/dev/null 2>&1 && [ ! -x "$VENV/bin/uv" ]; then
  [ -d "$VENV" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q uv
fi
UV="$(command -v uv || echo "$VENV/bin/uv")"
[ -x "$VENV/bin/python" ] || "$UV" venv -q -p "$PY" "$VENV"
echo "vbank: installing dependencies into $VENV (first run takes about a minute)" >&2
"$UV" pip install -q -p "$VENV/bin/python" --override constraints/overrides.txt -e ".[test]"
"$VENV/bin/python" - <<'PY'
import face_recognition_models, dlib, cv2, aiortc  # noqa: F401  fail loudly if the stack is broken
PY
echo "$want" > "$stamp"
