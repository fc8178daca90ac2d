#!/usr/bin/env bash
# Installs the pinned Python tools the tests use, each in its own venv.
# Usage: source .ci/tools.sh   (exports CFN_LINT, CHECKOV, MOTO_SERVER, OPENAPI_SPEC_VALIDATOR,
#        SCHEMATHESIS, CFN_LINT_SERVERLESS_RULES, CARGO_LAMBDA_PATH)
set -euo pipefail

CFN_LINT_VERSION=1.58.0
CHECKOV_VERSION=3.3.30
MOTO_VERSION=5.2.5
CARGO_LAMBDA_VERSION=1.9.2
ZIGLANG_VERSION=0.14.1
CFN_LINT_SERVERLESS_VERSION=0.3.6
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
SCHEMATHESIS_VERSION=4.32.5

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

venv cfn-lint "cfn-lint==$CFN_LINT_VERSION" "cfn-lint-serverless==$CFN_LINT_SERVERLESS_VERSION"
venv checkov "checkov==$CHECKOV_VERSION"
venv moto "moto[server]==$MOTO_VERSION"
venv openapi "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
venv schemathesis "schemathesis==$SCHEMATHESIS_VERSION"
venv cargo-lambda "cargo-lambda==$CARGO_LAMBDA_VERSION" "ziglang==$ZIGLANG_VERSION"

# arm64 is the functions' default architecture.
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu >&2
fi

export CFN_LINT="$TOOLS_DIR/cfn-lint/bin/cfn-lint"
export CHECKOV="$TOOLS_DIR/checkov/bin/checkov"
export MOTO_SERVER="$TOOLS_DIR/moto/bin/moto_server"
export OPENAPI_SPEC_VALIDATOR="$TOOLS_DIR/openapi/bin/openapi-spec-validator"
export SCHEMATHESIS="$TOOLS_DIR/schemathesis/bin/schemathesis"
# cfn-lint-serverless is in the cfn-lint venv; its rules are added with --append-rules.
export CFN_LINT_SERVERLESS_RULES=cfn_lint_serverless.rules
# The folder with cargo-lambda (and the Python that runs zig), for PATH.
export CARGO_LAMBDA_PATH="$TOOLS_DIR/cargo-lambda/bin"
