#!/usr/bin/env bash
# Install CRIU 4.x from Debian trixie into a private prefix, without touching
# the system's apt or dpkg state.
#
# Usage: scripts/setup-criu.sh [PREFIX]      (default PREFIX: <repo>/.criu)
#
# Debian 12's own criu (3.17) fails on our kernels ("vdso: Unexpected rt vDSO
# area bounds"); trixie's 4.1.x works when run through trixie's own dynamic
# loader and libraries. See DESIGN.md, "What we found out about CRIU".
#
# Result:
#   PREFIX/root/...     the unpacked packages (criu, libcompel1, their libraries)
#   PREFIX/bin/criu     a wrapper that runs criu through trixie's loader
#   PREFIX/.installed   written only after `criu check` said "Looks good"
#
# Idempotent: a second run with a working install does no network work.
# Environment:
#   CEDANA_DEBIAN_MIRROR  Debian mirror URI to use instead of the system's one.
#   CEDANA_CRIU_SUITE     suite to take criu from (default: trixie).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
PREFIX=${1:-$REPO/.criu}
SUITE=${CEDANA_CRIU_SUITE:-trixie}
ROOT_PKGS=(criu libcompel1)

die() {
    echo "setup-criu: error: $*" >&2
    exit 1
}

PREFIX=$(realpath -m -- "$PREFIX")
WRAPPER=$PREFIX/bin/criu
MARKER=$PREFIX/.installed

installed_version() {
    # Prints criu's version line if the wrapper runs; fails otherwise.
    local out
    [[ -f $MARKER && -x $WRAPPER ]] || return 1
    out=$("$WRAPPER" --version 2>/dev/null </dev/null) || return 1
    out=$(printf '%s\n' "$out" | grep -m1 '^Version:') || return 1
    printf '%s\n' "${out#Version: }"
}

if v=$(installed_version); then
    echo "criu: already installed in $PREFIX (version $v)"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "CRIU needs root to install and to run; re-run as root: sudo $0 ${1:-}"

# The prefix is ours to wipe: refuse a folder holding anything else (say, /usr).
if [[ -d $PREFIX ]]; then
    while IFS= read -r -d '' entry; do
        case ${entry##*/} in
        root | bin | work | .lock | .installed) ;;
        *) die "$PREFIX holds other files (${entry##*/}); give setup-criu.sh an empty or new folder" ;;
        esac
    done < <(find "$PREFIX" -mindepth 1 -maxdepth 1 -print0)
fi
mkdir -p "$PREFIX" 2>/dev/null || die "cannot create $PREFIX; pick a writable PREFIX: $0 <dir>"

# Serialize concurrent runs (parallel CI jobs, make -j) on the same prefix.
exec 9>"$PREFIX/.lock"
flock 9
if v=$(installed_version); then
    echo "criu: already installed in $PREFIX (version $v)"
    exit 0
fi

for tool in apt-get apt-cache dpkg dpkg-deb; do
    command -v "$tool" >/dev/null || die "'$tool' not found; this set-up needs a Debian-based system with apt"
done
ARCH=$(dpkg --print-architecture)
[[ $ARCH == amd64 ]] || die "only amd64 is supported (this machine is $ARCH); install CRIU >= 4.0 yourself and set CEDANA_CRIU"
TRIPLET=x86_64-linux-gnu

# --- the mirror and keyring the system already uses ----------------------
SYS_SOURCES=/etc/apt/sources.list.d/debian.sources
MIRROR=${CEDANA_DEBIAN_MIRROR:-}
SIGNED_BY=
if [[ -z $MIRROR && -r $SYS_SOURCES ]]; then
    MIRROR=$(awk 'tolower($1) == "uris:" { print $2; exit }' "$SYS_SOURCES")
    SIGNED_BY=$(awk 'tolower($1) == "signed-by:" && $2 ~ /^\// { print $2; exit }' "$SYS_SOURCES")
fi
if [[ -z $MIRROR && -r /etc/apt/sources.list ]]; then
    # One-line format: deb [options] URI suite components
    MIRROR=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
fi
[[ -n $MIRROR ]] || die "no Debian mirror found in $SYS_SOURCES; set CEDANA_DEBIAN_MIRROR=<mirror URI> and re-run"
MIRROR=${MIRROR%/}
if [[ -z $SIGNED_BY || ! -r $SIGNED_BY ]]; then
    SIGNED_BY=/usr/share/keyrings/debian-archive-keyring.gpg
fi

# --- private apt state -----------------------------------------------------
# Start from scratch: an install without the marker is incomplete or broken.
rm -rf "$PREFIX/root" "$PREFIX/bin" "$PREFIX/work"
WORK=$PREFIX/work
LOG=$WORK/setup.log
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/debs" "$PREFIX/root" "$PREFIX/bin"
: >"$WORK/status"
: >"$LOG"

# The system's apt.conf.d stays in effect (proxies, mirror quirks); its hooks
# that would touch system state (packagekit, appstream) are cleared.
cat >"$WORK/apt.conf" <<'EOF'
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
Acquire::Languages "none";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled "false";
Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
EOF

APT_OPTS=(
    -q
    -c "$WORK/apt.conf"
    -o "Dir::Etc::sourcelist=$WORK/sources.list"
    -o "Dir::Etc::sourceparts=/dev/null"
    -o "Dir::Etc::preferences=/dev/null"
    -o "Dir::Etc::preferencesparts=/dev/null"
    -o "Dir::State::Lists=$WORK/lists"
    -o "Dir::State::status=$WORK/status"
    -o "Dir::State::extended_states=$WORK/extended_states"
    -o "Dir::Cache=$WORK/cache"
    -o "Dir::Log=$WORK"
    -o "APT::Architectures::=$ARCH"
    -o "APT::Sandbox::User=root"
)
export DEBIAN_FRONTEND=noninteractive

apt_reason() { # the first apt warning/error in the log that says something
    grep -E '^(W|E): ' "$LOG" | grep -v 'Some index files failed to download' | head -n1 || true
}

apt_update() { # $1: the [options] of the source line
    echo "deb [$1] $MIRROR $SUITE main" >"$WORK/sources.list"
    echo "+ apt-get update ($(cat "$WORK/sources.list"))" >>"$LOG"
    apt-get "${APT_OPTS[@]}" update </dev/null >>"$LOG" 2>&1 || return 1
    # apt-get can exit 0 after a failed fetch; demand the index itself.
    compgen -G "$WORK/lists/*_${SUITE}_main_binary-${ARCH}_Packages*" >/dev/null
}

echo "criu: fetching $SUITE package lists from $MIRROR"
if [[ -r $SIGNED_BY ]] && apt_update "signed-by=$SIGNED_BY"; then
    :
elif grep -E '^(W|E): ' "$LOG" | grep -qE 'NO_PUBKEY|not signed|signature|EXPKEYSIG|KEYEXPIRED'; then
    # The system keyring predates the key the suite is signed with.
    echo "criu: warning: $SIGNED_BY cannot verify $SUITE; fetching it unverified ([trusted=yes])" >&2
    : >"$LOG"
    apt_update "trusted=yes" ||
        die "apt-get update of $SUITE from $MIRROR failed (see $LOG); check access to the mirror or set CEDANA_DEBIAN_MIRROR, then re-run $0"
else
    die "apt-get update of $SUITE from $MIRROR failed: $(apt_reason) (full log: $LOG); check access to the mirror or set CEDANA_DEBIAN_MIRROR, then re-run $0"
fi

# --- dependency closure ------------------------------------------------------
# Top-level lines of `apt-cache depends --recurse` are the packages; virtual
# ones print as <name> and are skipped. Packages only needed by maintainer
# scripts (debconf and friends) are skipped too: we only unpack.
SKIP_RE='^(debconf|debconf-2\.0|dpkg|perl-base|install-info|base-files)$'
echo "+ apt-cache depends --recurse ${ROOT_PKGS[*]}" >>"$LOG"
deps=$(apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances "${ROOT_PKGS[@]}" </dev/null 2>>"$LOG") ||
    die "apt-cache could not resolve ${ROOT_PKGS[*]} in $SUITE (see $LOG); is criu still in $SUITE? set CEDANA_CRIU_SUITE and re-run $0"
mapfile -t PKGS < <(printf '%s\n' "$deps" | grep -E '^[a-z0-9]' | grep -vE "$SKIP_RE" | sort -u)
printf '%s\n' "${PKGS[@]}" >"$WORK/packages.txt"
for p in "${ROOT_PKGS[@]}" libc6; do
    grep -qx "$p" "$WORK/packages.txt" || die "package $p missing from the $SUITE closure (see $WORK/packages.txt); re-run $0"
done

# --- download and unpack ---------------------------------------------------
echo "criu: downloading ${#PKGS[@]} packages"
echo "+ apt-get download ${PKGS[*]}" >>"$LOG"
(cd "$WORK/debs" && apt-get "${APT_OPTS[@]}" download "${PKGS[@]}" </dev/null >>"$LOG" 2>&1) ||
    die "apt-get download from $MIRROR failed: $(apt_reason) (full log: $LOG); re-run $0"
for deb in "$WORK"/debs/*.deb; do
    dpkg -x "$deb" "$PREFIX/root" 2>>"$LOG" || die "dpkg -x $deb failed (see $LOG); delete $PREFIX and re-run $0"
done

R=$PREFIX/root
LOADER=
for cand in "$R/usr/lib/$TRIPLET/ld-linux-x86-64.so.2" "$R/lib/$TRIPLET/ld-linux-x86-64.so.2" \
    "$R/usr/lib64/ld-linux-x86-64.so.2" "$R/lib64/ld-linux-x86-64.so.2"; do
    if [[ -e $cand ]]; then LOADER=$cand; break; fi
done
[[ -n $LOADER ]] || die "no ld-linux-x86-64.so.2 in the unpacked libc6 under $R; delete $PREFIX and re-run $0"
LIBPATH=
for d in "$R/usr/lib/$TRIPLET" "$R/lib/$TRIPLET"; do
    [[ -d $d ]] && LIBPATH=${LIBPATH:+$LIBPATH:}$d
done
CRIU_BIN=
for cand in "$R/usr/sbin/criu" "$R/sbin/criu"; do
    if [[ -x $cand ]]; then CRIU_BIN=$cand; break; fi
done
[[ -n $CRIU_BIN ]] || die "no criu binary under $R after unpacking; delete $PREFIX and re-run $0"

# The wrapper finds the prefix from its own location, so a prefix copied or
# carried elsewhere (scripts/gpu-check.sh on a GPU machine) keeps working.
# Only the fixed paths below the prefix are written into it.
{
    echo '#!/bin/sh'
    echo "# Generated by scripts/setup-criu.sh: CRIU from Debian $SUITE, run through its own loader."
    echo 'p=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)'
    printf 'exec "$p/%s" --library-path "%s" "$p/%s" "$@"\n' \
        "${LOADER#"$PREFIX"/}" "${LIBPATH//"$PREFIX"\//\$p/}" "${CRIU_BIN#"$PREFIX"/}"
} >"$WRAPPER"
chmod 755 "$WRAPPER"

# --- verify ------------------------------------------------------------------
version_out=$("$WRAPPER" --version 2>&1 </dev/null) ||
    die "$WRAPPER --version failed: $(printf '%s\n' "$version_out" | tail -n1); delete $PREFIX and re-run $0"
version=$(printf '%s\n' "$version_out" | sed -n 's/^Version: *//p' | head -n1)
[[ ${version%%.*} =~ ^[0-9]+$ && ${version%%.*} -ge 4 ]] ||
    die "expected CRIU >= 4 from $SUITE, got '${version:-?}'; set CEDANA_CRIU_SUITE to a suite with CRIU 4 and re-run $0"
check_out=$("$WRAPPER" check 2>&1 </dev/null) || true
if ! grep -q 'Looks good' <<<"$check_out"; then
    printf '%s\n' "$check_out" >>"$LOG"
    die "criu check failed: $(grep -v 'RLIMIT_NOFILE' <<<"$check_out" | grep -v '^[[:space:]]*$' | tail -n1) (see $LOG); this kernel may lack CRIU support"
fi

rm -rf "$WORK"
touch "$MARKER"
echo "criu: installed CRIU $version from Debian $SUITE in $PREFIX ($WRAPPER); criu check: Looks good"
