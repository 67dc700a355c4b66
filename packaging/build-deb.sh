#!/usr/bin/env bash
# Builds the Debian package of jobd and checks it:
#   1. release binaries (jobd, jobctl, jobd-http, jobd-gen),
#   2. man pages and shell completions with jobd-gen into packaging/gen/generated/,
#   3. `cargo deb -p jobd-gen` (installs cargo-deb first if it is missing),
#   4. the package's file list (dpkg-deb -c) against the expected one: any missing
#      file fails the build; its conffiles and maintainer scripts; and the packaged
#      binaries run, extracted into a scratch directory.
# Prints the path of the .deb on the last line of stdout.
#
# Usage: packaging/build-deb.sh        (honours CARGO_TARGET_DIR; default target/)
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
gen_dir=packaging/gen/generated
started=$SECONDS
step() { echo "==> [$((SECONDS - started))s] $*" >&2; }
fail() { echo "build-deb: $*" >&2; exit 1; }

if ! cargo deb --version >/dev/null 2>&1; then
    step "installing cargo-deb"
    cargo install cargo-deb --locked --version '^3.8' >&2
fi

step "building release binaries"
cargo build --release --locked -p jobd -p jobd-cli -p jobd-gen >&2

step "generating man pages and completions"
"$target_dir/release/jobd-gen" "$gen_dir" >/dev/null

step "cargo deb"
mkdir -p "$target_dir/debian"
# --strip: the release profile keeps debug info (for profiling); the package does not.
deb=$(cargo deb -p jobd-gen --no-build --strip --locked --output "$target_dir/debian/" | tail -n 1)
[ -f "$deb" ] || fail "cargo deb did not name a package file (got: $deb)"

step "checking $deb"
listing=$(dpkg-deb -c "$deb")
# "./usr/bin/jobd" etc.: the paths of the regular files in the package.
files=$(awk '$1 ~ /^-/ { sub(/^\.\//, "", $6); print $6 }' <<<"$listing" | sort)

expected=(
    usr/bin/jobd
    usr/bin/jobctl
    usr/bin/jobd-http
    usr/lib/systemd/system/jobd.service
    usr/lib/systemd/system/jobd.socket
    usr/lib/systemd/system/jobd-http.service
    usr/lib/sysusers.d/jobd.conf
    usr/lib/tmpfiles.d/jobd.conf
    etc/jobd/jobd.toml
    usr/share/man/man1/jobd.1.gz
    usr/share/man/man1/jobctl.1.gz
    usr/share/man/man1/jobd-http.1.gz
    usr/share/man/man1/jobctl-upload.1.gz
    usr/share/man/man1/jobctl-completions.1.gz
    usr/share/doc/jobd/copyright
    usr/share/doc/jobd/README.md
    usr/share/doc/jobd/PROTOCOL.md
)
for bin in jobd jobctl jobd-http; do
    expected+=(
        "usr/share/bash-completion/completions/$bin"
        "usr/share/zsh/vendor-completions/_$bin"
        "usr/share/fish/vendor_completions.d/$bin.fish"
    )
done
# Every page jobd-gen wrote (one per jobctl subcommand too) must be packaged.
for page in "$gen_dir"/man/*.1; do
    expected+=("usr/share/man/man1/$(basename "$page").gz")
done

missing=0
for f in "${expected[@]}"; do
    if ! grep -qxF "$f" <<<"$files"; then
        echo "build-deb: missing from the package: /$f" >&2
        missing=1
    fi
done
[ "$missing" = 0 ] || { echo "$listing" >&2; fail "the package lacks files"; }

for f in usr/bin/jobd usr/bin/jobctl usr/bin/jobd-http; do
    grep -qE "^-rwxr-xr-x .* \./$f\$" <<<"$listing" || fail "/$f is not mode 0755"
done

control=$(mktemp -d)
scratch=$(mktemp -d)
trap 'rm -rf "$control" "$scratch"' EXIT
dpkg-deb --control "$deb" "$control"
grep -qxF /etc/jobd/jobd.toml "$control/conffiles" || fail "/etc/jobd/jobd.toml is not a conffile"
for script in postinst prerm postrm; do
    [ -x "$control/$script" ] || fail "the package has no executable $script"
done
grep -q '^Package: jobd$' "$control/control" || fail "the package is not named jobd"

# The packaged binaries run, and the packaged config is valid as shipped.
dpkg-deb -x "$deb" "$scratch"
"$scratch/usr/bin/jobd" --version >/dev/null || fail "packaged jobd does not run"
"$scratch/usr/bin/jobd" --config "$scratch/etc/jobd/jobd.toml" --check-config >/dev/null \
    || fail "the packaged jobd.toml is not accepted by jobd --check-config"
"$scratch/usr/bin/jobctl" completions bash | grep -q jobctl || fail "jobctl completions bash"
"$scratch/usr/bin/jobd-http" --version >/dev/null || fail "packaged jobd-http does not run"
gzip -t "$scratch"/usr/share/man/man1/*.gz || fail "a man page is not valid gzip"

step "ok: $(wc -l <<<"$files") files, $(du -h "$deb" | cut -f1)"
echo "$files" >&2
echo "$deb"
