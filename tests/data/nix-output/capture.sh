#!/usr/bin/env bash
# Records what the `nix` on PATH prints for the calls deploy-flake parses, into
# tests/data/nix-output/<nix version>/ (read by tests/test_nix_output.py).
#
#   tests/data/nix-output/capture.sh                                # this machine's Nix
#   lab/lab deployer run sid -- tests/data/nix-output/capture.sh    # Nix 2.34 (lab deployer root)
#
# Needs a Nix that builds without a sandbox (/bin/sh builders) and no network. The flakes are
# made under /tmp/deploy-flake-nix-output, so paths in the files are the same on every run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(nix --version | awk '{print $NF}')
out=$here/$version
work=/tmp/deploy-flake-nix-output
nixf=(--extra-experimental-features 'nix-command flakes')
rm -rf "$work" "$out"; mkdir -p "$work/dep" "$work/flake" "$out"

# An input (so flake.lock and the archive have something in them), and configurations
# laid out as deploy-flake builds them: nixosConfigurations.NAME.config.system.build.toplevel.
cat > "$work/dep/flake.nix" <<'NIX'
{ outputs = { self }: { message = "hello from dep"; }; }
NIX
cat > "$work/flake/flake.nix" <<NIX
{
  inputs.dep.url = "path:$work/dep";
  outputs = { self, dep }:
    let
      sh = name: script: deps: derivation {
        inherit name deps;
        system = "x86_64-linux";
        builder = "/bin/sh";
        args = [ "-c" script ];
      };
      broken = sh "broken-dep-1.0" ''echo "capture: this derivation intentionally fails to build" >&2; exit 1'' [ ];
      system = deps: { config.system.build.toplevel = sh "nixos-system-capture" ''echo "\${dep.message}" > \$out'' deps; };
    in {
      nixosConfigurations = {
        good = system [ ];
        build-fail = system [ broken ];
        eval-fail = system [ (throw "capture: evaluation of eval-fail intentionally fails") ];
      };
    };
}
NIX
ref=path:$work/flake
top() { echo "$ref#nixosConfigurations.$1.config.system.build.toplevel"; }

# Without flake.lock: the call that writes the lock file, then the archive after it.
nix "${nixf[@]}" flake metadata --json "$ref" > "$out/metadata-new-lock.json" 2>/dev/null
nix "${nixf[@]}" flake archive --json "$ref" > "$out/archive-after-new-lock.json" 2>/dev/null
rm "$work/flake/flake.lock"
nix "${nixf[@]}" flake archive --json "$ref" > "$out/archive-new-lock.json" 2>/dev/null
# With flake.lock in place.
nix "${nixf[@]}" flake metadata --json "$ref" > "$out/metadata.json"
nix "${nixf[@]}" flake archive --json "$ref" > "$out/archive.json"
nix "${nixf[@]}" build --no-link --json -L "$(top good)" > "$out/build.json"
for name in build-fail eval-fail no-such-config; do
  if nix "${nixf[@]}" build --no-link --json -L "$(top "$name")" > /dev/null 2> "$out/build-$name.stderr"; then
    echo "capture: building $name succeeded" >&2; exit 1
  fi
done
nix --version > "$out/version"
echo "capture: $out"
