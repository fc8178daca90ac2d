#!/usr/bin/env bash
# Installs the pinned Python tools the tests use, each in its own venv.
# Usage: source .ci/tools.sh   (exports CFN_LINT, CHECKOV, MOTO_SERVER)
set -euo pipefail

CFN_LINT_VERSION=1.58.0
CHECKOV_VERSION=3.3.30
MOTO_VERSION=5.2.5

TOOLS_DIR=${PIPELINE_TOOLS_DIR:-"${XDG_CACHE_HOME:-$HOME/.cache}/pipeline-tools"}
mkdir -p "$TOOLS_DIR"

# venv NAME SPEC...: creates $TOOLS_DIR/NAME with SPEC installed, unless the
# stamp file says the same SPEC is already there.
venv() {
  local name=$1; shift
  local dir="$TOOLS_DIR/$name" stamp="$*"
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then
    return 0
  fi
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  echo "$stamp" >"$dir/.stamp"
}

venv cfn-lint "cfn-lint==$CFN_LINT_VERSION"
venv checkov "checkov==$CHECKOV_VERSION"
venv moto "moto[server]==$MOTO_VERSION"

export CFN_LINT="$TOOLS_DIR/cfn-lint/bin/cfn-lint"
export CHECKOV="$TOOLS_DIR/checkov/bin/checkov"
export MOTO_SERVER="$TOOLS_DIR/moto/bin/moto_server"
