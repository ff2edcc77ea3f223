#!/bin/sh
# ragtune's stage launcher; dvc.yaml's commands call it: `sh .ragtune/stage NAME [--path-option PATH ...]`.
# Written by `ragtune init`; do not edit (`ragtune init --upgrade` rewrites it). It runs the stage with the
# Python that has ragtune, so no virtualenv needs activating: $RAGTUNE_PYTHON if set, else the interpreter
# recorded in .ragtune/python (this machine's; git-ignored; `ragtune init --here` records it), else python3.
stage="$1"
shift
py="${RAGTUNE_PYTHON:-}"
if [ -z "$py" ] && [ -f .ragtune/python ]; then
    py="$(cat .ragtune/python)"
fi
py="${py:-python3}"
if ! "$py" -c "import ragtune" 2>/dev/null; then
    echo "error: '$py' cannot import ragtune. Record the Python that has it with \`<that python> -m ragtune init --here\`, or set RAGTUNE_PYTHON." >&2
    exit 2
fi
exec "$py" -m "ragtune.stages.$stage" "$@"
