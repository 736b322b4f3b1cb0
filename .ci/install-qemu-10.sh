#!/usr/bin/env bash
# Installs Debian's QEMU 10.0 from bookworm-backports into a private prefix, side by side with the system's QEMU
# 7.2, so the lab can run cross-version migrations. The 7.2 packages are never upgraded or replaced: the 10.0
# packages are only unpacked (dpkg -x), and the runtime libraries they need are installed from apt as ordinary
# packages.
#
# Usage: .ci/install-qemu-10.sh [--force] [PREFIX]
#   PREFIX  defaults to $BITFERRY_QEMU10_PREFIX, then /opt/bitferry-qemu-10.0
#   --force unpack again even when PREFIX already holds a working install (for example after a backports update)
#
# Running the unpacked binaries (what src/lab/builds.ts does for every process, never exported globally: a QEMU
# that loads the other version's modules aborts):
#   QEMU_MODULE_DIR=PREFIX/usr/lib/x86_64-linux-gnu/qemu PREFIX/usr/bin/qemu-system-x86_64 \
#     -L PREFIX/usr/share/qemu -L PREFIX/usr/share/seabios ...
#   QEMU_MODULE_DIR=PREFIX/usr/lib/x86_64-linux-gnu/qemu PREFIX/usr/bin/qemu-img ...
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

FORCE=0
PREFIX=""
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h | --help)
      sed -n '2,16p' "$0"
      exit 0
      ;;
    -*)
      echo "unknown option: $arg" >&2
      exit 2
      ;;
    *) PREFIX="$arg" ;;
  esac
done
PREFIX="${PREFIX:-${BITFERRY_QEMU10_PREFIX:-/opt/bitferry-qemu-10.0}}"
case "$PREFIX" in
  /*) ;;
  *) PREFIX="$PWD/$PREFIX" ;;
esac
PREFIX="${PREFIX%/}"

CODENAME=bookworm
SUITE="$CODENAME-backports"
PACKAGES=(qemu-system-x86 qemu-system-common qemu-system-data qemu-utils qemu-block-extra qemu-system-gui
  qemu-system-modules-opengl qemu-system-modules-spice seabios)
LIST=/etc/apt/sources.list.d/bitferry-backports.list
STAMP="$PREFIX/.bitferry-qemu-10"
MODDIR="$PREFIX/usr/lib/x86_64-linux-gnu/qemu"
QEMU="$PREFIX/usr/bin/qemu-system-x86_64"
QEMU_IMG="$PREFIX/usr/bin/qemu-img"
T0=$(date +%s.%N)

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

log() { echo "install-qemu-10: $*"; }
die() {
  echo "install-qemu-10: ERROR: $*" >&2
  exit 1
}

# shellcheck disable=SC1091
. /etc/os-release
[ "${VERSION_CODENAME:-}" = "$CODENAME" ] ||
  die "this script targets Debian $CODENAME (found '${VERSION_CODENAME:-unknown}'); on newer releases QEMU >= 10 is the system package"
[ "$(dpkg --print-architecture)" = "amd64" ] || die "only amd64 is supported"

# Sonames the unpacked binaries and modules cannot resolve, one per line (empty when all resolve).
missing_libs() {
  local f
  for f in "$PREFIX"/usr/bin/* "$MODDIR"/*.so; do
    # ldd prints "not found" (and "version ... not found") for what the dynamic loader cannot satisfy.
    ldd "$f" 2>/dev/null | awk -v f="${f##*/}" '/not found/ {print f ": " $1}' || true
  done
}

# Starts the 10.0 binary the way the lab does and lists every QOM type: that loads every module, so a wrong
# QEMU_MODULE_DIR or a missing library fails here rather than in a test.
smoke() {
  local out
  out=$(printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"qom-list-types"}' '{"execute":"quit"}' |
    QEMU_MODULE_DIR="$MODDIR" timeout 30 "$QEMU" -L "$PREFIX/usr/share/qemu" -L "$PREFIX/usr/share/seabios" \
      -machine none -nodefaults -display none -qmp stdio 2>&1) || {
    echo "$out" | tail -5 >&2
    return 1
  }
  grep -q '"name": "migration"' <<<"$out" || {
    echo "$out" | tail -5 >&2
    return 1
  }
}

report() {
  log "$(QEMU_MODULE_DIR="$MODDIR" "$QEMU" -L "$PREFIX/usr/share/qemu" -L "$PREFIX/usr/share/seabios" --version | head -1)"
  log "$(QEMU_MODULE_DIR="$MODDIR" "$QEMU_IMG" --version | head -1)"
  log "prefix $PREFIX: $(du -sh "$PREFIX" | cut -f1); took $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"
}

if [ "$FORCE" = 0 ] && [ -f "$STAMP" ] && [ -x "$QEMU" ] && [ -z "$(missing_libs)" ] && smoke 2>/dev/null; then
  log "already installed in $PREFIX ($(head -1 "$STAMP")); nothing to do (--force reinstalls)"
  report
  exit 0
fi

# ---- 1. the backports source, on the mirror this machine already uses ----

# Prints "URI SIGNED-BY" of the first enabled source for "$CODENAME main", from deb822 files or one-line lists.
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$CODENAME" '
      BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""; comps = ""; key = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^#/ || line ~ /^[ \t]/) continue
          k = tolower(substr(line, 1, index(line, ":") - 1)); v = substr(line, index(line, ":") + 1)
          gsub(/^[ \t]+|[ \t]+$/, "", v)
          if (k == "types") types = v; else if (k == "uris") uris = v; else if (k == "suites") suites = v
          else if (k == "components") comps = v; else if (k == "signed-by") key = v
          else if (k == "enabled") enabled = tolower(v)
        }
        if (enabled == "no" || (" " types " ") !~ / deb / || (" " suites " ") !~ (" " suite " ") || (" " comps " ") !~ / main /) next
        split(uris, u, /[ \t]+/)
        if (key !~ /^\//) key = ""
        print u[1], key
        exit
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && [ "$f" != "$LIST" ] || continue
    awk -v suite="$CODENAME" '
      $1 != "deb" { next }
      {
        i = 2; key = ""
        if ($2 ~ /^\[/) {
          for (; i <= NF; i++) {
            if (match($i, /signed-by=[^] ]+/)) key = substr($i, RSTART + 10, RLENGTH - 10)
            if ($i ~ /\]$/) { i++; break }
          }
        }
        if ($(i + 1) != suite) next
        for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i, key; exit }
      }' "$f"
  done
}

# Only the files apt reads: sources.list.d also holds disabled leftovers (*.disabled, *.save).
already_configured() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && [ "$f" != "$LIST" ] || continue
    grep -qE "^[^#]*\b$SUITE\b" "$f" && return 0
  done
  return 1
}

if already_configured; then
  log "apt already has a $SUITE source; not adding one"
else
  read -r MIRROR KEY < <(find_mirror | head -1) || true
  if [ -z "${MIRROR:-}" ]; then
    MIRROR="http://deb.debian.org/debian"
    log "no '$CODENAME main' source found in /etc/apt; falling back to $MIRROR"
  fi
  if [ -z "${KEY:-}" ] && [ -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
    KEY=/usr/share/keyrings/debian-archive-keyring.gpg
  fi
  LINE="deb ${KEY:+[signed-by=$KEY] }$MIRROR $SUITE main"
  if [ "$(cat "$LIST" 2>/dev/null || true)" != "$LINE" ]; then
    echo "$LINE" | $SUDO tee "$LIST" >/dev/null
    log "wrote $LIST: $LINE"
  else
    log "$LIST is up to date"
  fi
fi

log "apt-get update"
$SUDO apt-get update -qq

# ---- 2. download and unpack into the prefix ----

WORK=$(mktemp -d /tmp/bitferry-qemu10.XXXXXX)
STAGE="$PREFIX.new.$$"
cleanup() { $SUDO rm -rf "$WORK" "$STAGE"; }
trap cleanup EXIT
# apt downloads as the _apt user where it can; without this it warns that the sandbox is off.
if id _apt >/dev/null 2>&1 && [ -z "$SUDO" ]; then chown _apt "$WORK"; fi

log "apt-get download (${PACKAGES[*]}) from $SUITE"
(cd "$WORK" && $SUDO apt-get download -qq "${PACKAGES[@]/%//$SUITE}")

$SUDO mkdir -p "$STAGE"
VERSIONS=""
for deb in "$WORK"/*.deb; do
  $SUDO dpkg -x "$deb" "$STAGE"
  VERSIONS+="$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"$'\n'
done
QEMU_VERSION=$(awk '$1 == "qemu-system-x86" {print $2}' <<<"$VERSIONS")
[ -n "$QEMU_VERSION" ] || die "qemu-system-x86 was not downloaded"
log "unpacked $(grep -c . <<<"$VERSIONS") packages, qemu-system-x86 $QEMU_VERSION"

# ---- 3. runtime libraries the 10.0 packages need and the 7.2 ones did not ----

# Every Depends group of the downloaded packages that the installed system does not satisfy, except those naming
# one of our own (unpacked, not installed) packages.
unsatisfied_deps() {
  local -A installed=()
  local pkg status ver group alt name op want ok
  while read -r pkg status ver; do
    if [ "$status" = "ii" ]; then installed[${pkg%%:*}]="$ver"; fi
  done < <(dpkg-query -W -f='${binary:Package} ${db:Status-Abbrev}${Version}\n')
  while read -r group; do
    ok=0
    while read -r alt; do
      name=$(awk '{print $1}' <<<"$alt")
      name=${name%%:*}
      case " ${PACKAGES[*]} qemu-system-any " in *" $name "*)
        ok=1
        break
        ;;
      esac
      [ -n "${installed[$name]:-}" ] || continue
      if [[ "$alt" =~ \(([<>=]+)\ *([^\)]+)\) ]]; then
        op=${BASH_REMATCH[1]}
        want=${BASH_REMATCH[2]}
        dpkg --compare-versions "${installed[$name]}" "$op" "$want" || continue
      fi
      ok=1
      break
    done < <(tr '|' '\n' <<<"$group" | sed 's/^ *//; s/ *$//')
    [ "$ok" = 1 ] || echo "$group"
  done < <(for deb in "$WORK"/*.deb; do dpkg-deb -f "$deb" Depends | tr ',' '\n'; done |
    sed 's/^ *//; s/ *$//' | grep -v '^$' | sort -u)
}

# The apt argument that installs the first alternative of a Depends group at a version that satisfies it: from
# the release apt prefers, else from backports.
install_arg() {
  local alt name op ver cand bpo
  alt=$(sed 's/|.*//; s/ *$//' <<<"$1")
  name=$(awk '{print $1}' <<<"$alt")
  cand=$(apt-cache policy "$name" | awk '/Candidate:/ {print $2}')
  if [[ "$alt" =~ \(([<>=]+)\ *([^\)]+)\) ]]; then
    op=${BASH_REMATCH[1]}
    ver=${BASH_REMATCH[2]}
  else
    op=""
  fi
  if [ -n "$cand" ] && [ "$cand" != "(none)" ] && { [ -z "$op" ] || dpkg --compare-versions "$cand" "$op" "$ver"; }; then
    echo "$name"
    return
  fi
  bpo=$(apt-cache madison "$name" | awk -F' *[|] *' -v s="$SUITE" '$3 ~ s {print $2; exit}')
  if [ -n "$bpo" ] && { [ -z "$op" ] || dpkg --compare-versions "$bpo" "$op" "$ver"; }; then
    echo "$name/$SUITE"
    return
  fi
  die "no installable version of '$1'"
}

mapfile -t DEPS < <(unsatisfied_deps)
if [ "${#DEPS[@]}" -gt 0 ]; then
  ARGS=()
  for d in "${DEPS[@]}"; do
    arg=$(install_arg "$d")
    ARGS+=("$arg")
  done
  log "installing runtime libraries: ${ARGS[*]}"
  # Refuse anything that would touch the system QEMU: the whole point is to keep 7.2 as it is.
  PLAN=$(apt-get install -s -qq --no-install-recommends "${ARGS[@]}")
  if grep -E '^Remv |^Inst (qemu-|seabios|ipxe-qemu)' <<<"$PLAN" | grep -q .; then
    grep -E '^Remv |^Inst (qemu-|seabios|ipxe-qemu)' <<<"$PLAN" >&2
    die "installing ${ARGS[*]} would change the system QEMU packages; refusing"
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${ARGS[@]}" >/dev/null
else
  log "no runtime libraries missing"
fi

# ---- 4. move into place, check, record ----

$SUDO rm -rf "$PREFIX"
$SUDO mkdir -p "$(dirname "$PREFIX")"
$SUDO mv "$STAGE" "$PREFIX"

MISSING=$(missing_libs)
[ -z "$MISSING" ] || die "shared libraries still missing after install:"$'\n'"$MISSING"
smoke || die "QEMU 10.0 in $PREFIX does not start (see above)"
printf '%s\n%s' "qemu-system-x86 $QEMU_VERSION from $SUITE" "$VERSIONS" | $SUDO tee "$STAMP" >/dev/null
log "installed into $PREFIX"
report
