#!/usr/bin/env bash
# Install MMATS for running it: a virtual environment at PREFIX/venv holding MMATS (not
# editable) with its live and console extras, then a smoke check from outside the source
# tree. The one install: the Dockerfile runs it, CI runs it (.ci/run), and a mini-PC runs
# it before the systemd units in deploy/systemd/ (they expect PREFIX=/opt/mmats).
#
#   deploy/install.sh [PREFIX [SOURCE]]   install (PREFIX: $MMATS_PREFIX, else /opt/mmats;
#                                         SOURCE: the tree this script is in)
#   deploy/install.sh --check [PREFIX]    the smoke check alone, on an installed PREFIX
#
# What PREFIX holds afterwards:
#   PREFIX/venv/          the environment; PREFIX/venv/bin/mmats is the command
#   PREFIX/bin/mmats-env  runs mmats with one environment's settings, as the units do
#   PREFIX/sample         the sample candles shipped inside the package (read-only)
#
# Environment: PYTHON (default python3; 3.11 or newer), MMATS_PIP_OPTIONS (extra pip
# options, e.g. "--no-index --find-links /srv/wheels" to install from a wheelhouse).
# Running it again upgrades the install in place: the environment is kept, MMATS is
# reinstalled from SOURCE and the smoke check runs again. Exit 0 only if it passed.
set -euo pipefail

temporary=()  # folders removed on exit, however the script ends
trap 'rm -rf "${temporary[@]}"' EXIT
say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

# The smoke check: the installed command works from an empty folder, is the installed
# copy (not a source tree's), carries its package data and extras, and offers --serve
# (the systemd units and the container run `mmats live --serve`).
check() {
  local prefix=$1 venv=$1/venv here
  [ -x "$venv/bin/mmats" ] || die "$venv/bin/mmats is missing: install first"
  here=$(mktemp -d)
  temporary+=("$here")
  cd "$here"
  "$venv/bin/mmats" --help >/dev/null || die "'mmats --help' failed"
  local help
  help=$("$venv/bin/mmats" live --help) || die "'mmats live --help' failed"
  grep -q -- '--serve' <<<"$help" \
    || die "'mmats live --help' does not list --serve: this MMATS has no always-on runner"
  "$venv/bin/mmats" dashboard --help >/dev/null || die "'mmats dashboard --help' failed"
  "$venv/bin/python" - "$venv" <<'PY' || die "the installed package is incomplete (above)"
import importlib, sys
from pathlib import Path

venv = Path(sys.argv[1]).resolve()
try:
    import mmats
except ImportError as error:
    sys.exit(f"install.sh: mmats does not import: {error}")
where = Path(mmats.__file__).resolve()
problems = []
if not where.is_relative_to(venv):
    problems.append(f"mmats is imported from {where.parent}, not from {venv}")
package = where.parent
for pattern in ("strategies/*.py", "data/sample/*/*.parquet", "console/static/*"):
    if not list(package.glob(pattern)):
        problems.append(f"package data {pattern} is missing")
for module in ("ccxt", "oandapyV20", "keyring", "cryptography",  # the live extra
               "fastapi", "uvicorn", "telegram", "multipart"):   # the console extra
    try:
        importlib.import_module(module)
    except ImportError as error:
        problems.append(f"{module} does not import: {error}")
for problem in problems:
    print(f"install.sh: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
  say "smoke check passed: $venv/bin/mmats ($("$venv/bin/python" -c \
    'import importlib.metadata as m; print(m.version("mmats"))'))"
}

if [ "${1:-}" = "--check" ]; then
  check "$(realpath -m "${2:-${MMATS_PREFIX:-/opt/mmats}}")"
  exit 0
fi

prefix=$(realpath -m "${1:-${MMATS_PREFIX:-/opt/mmats}}")
source_tree=$(realpath "${2:-$(dirname "$0")/..}")
python=${PYTHON:-python3}
venv=$prefix/venv
[ -f "$source_tree/pyproject.toml" ] && [ -d "$source_tree/mmats" ] \
  || die "$source_tree is not an MMATS source tree (no pyproject.toml and mmats/)"
command -v "$python" >/dev/null || die "no $python: install Python 3.11 or newer, or set PYTHON"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$python is Python $("$python" -c 'import platform; print(platform.python_version())'), MMATS needs 3.11 or newer"
"$python" -c 'import venv, ensurepip' 2>/dev/null \
  || die "$python cannot make virtual environments (Debian: apt-get install python3-venv)"

say "installing MMATS from $source_tree into $prefix"
mkdir -p "$prefix/bin" || die "cannot create $prefix (run as a user who may write there)"
if [ -x "$venv/bin/python" ]; then
  say "keeping the environment $venv"
else
  "$python" -m venv "$venv"
fi

# Build from a clean copy: a build in the tree would write build/ and egg-info there, and
# a stale build/lib could smuggle deleted modules into the wheel.
build=$(mktemp -d)
temporary+=("$build")
"$python" - "$source_tree" "$build" <<'PY' || die "cannot copy $source_tree to build it"
import shutil, sys
from pathlib import Path

source, build = Path(sys.argv[1]), Path(sys.argv[2])
# top-level folders of a working copy that are not part of the source
skip_top = {".git", ".venv", "build", "dist", "data", "journal", "reports", ".pytest_cache",
            ".ruff_cache", ".hypothesis", ".mmats_cache"}


def ignore(folder, names):
    top = Path(folder) == source
    return [n for n in names if (top and n in skip_top) or n == "__pycache__"
            or n.endswith(".egg-info")]


shutil.copytree(source, build / "mmats", ignore=ignore, symlinks=True)
PY
build=$build/mmats
# pip always reinstalls a project given as a folder, so a second run installs SOURCE anew;
# dependencies already satisfied are kept.
# shellcheck disable=SC2086  # MMATS_PIP_OPTIONS is a list of options
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  ${MMATS_PIP_OPTIONS:-} "$build[live,console]" \
  || die "pip could not install mmats[live,console] from $source_tree (above)"

install -m 0755 "$source_tree/deploy/mmats-env" "$prefix/bin/mmats-env"
sample=$("$venv/bin/python" -c \
  'import mmats.data, pathlib; print(pathlib.Path(mmats.data.__file__).parent / "sample")')
ln -sfn "$sample" "$prefix/sample"

check "$prefix"
# Compile the kernels now rather than in the first backtest or tick of every new process:
# into numba's cache as this shell sets it (NUMBA_CACHE_DIR, MMATS_CACHE_DIR; by default
# beside the installed package; run from check's empty folder). A failure costs speed, not
# the install: only warn.
say "compiling the kernels into numba's cache (mmats warmup, a minute or more)"
"$venv/bin/mmats" warmup \
  || say "warning: 'mmats warmup' failed (above): each process compiles its kernels itself"
say "done: $venv/bin/mmats; the units in deploy/systemd/ expect the prefix /opt/mmats"
