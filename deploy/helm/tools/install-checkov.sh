#!/usr/bin/env bash
# checkov (the chart tests' security scan) in its own virtualenv at .tools/checkov: it pins about
# fifty packages (boto3, an older `packaging`, ...) that the project's environment should not get.
# Idempotent; the tests skip the scan while it is absent.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
venv="$root/.tools/checkov"
version="3.3.30"
if [[ -x "$venv/bin/checkov" ]] && [[ "$("$venv/bin/checkov" --version 2>/dev/null)" == "$version" ]]; then
  echo "checkov $version already at $venv: nothing to do"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "checkov==$version"
echo "checkov $("$venv/bin/checkov" --version) installed at $venv"
