#!/usr/bin/env bash
# Pack @tally/client, install the tarball into an empty Node project beside the real `openai` package
# (and firebase-admin, for recorderToken), run scripts/smoke.mjs there (against the emulators when
# TALLY_FUNCTIONS_URL is set, e.g. ./scripts/with-emulators bash clients/js/scripts/pack-check.sh),
# and print the unpacked size of the core (dist/index.js and its local imports) and of the package.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tally-pack-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

cd "$HERE"
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
# The versions the package is tested with (its pinned dev dependencies).
version() { node -p "require('$HERE/node_modules/$1/package.json').version"; }
OPENAI="openai@$(version openai)"
ADMIN="firebase-admin@$(version firebase-admin)"

npm pack --pack-destination "$WORK" --json --loglevel=error > "$WORK/pack.json"  # runs `prepack` (the build)
TARBALL=$(node -p "require('$WORK/pack.json')[0].filename")
PACKED=$(node -p "require('$WORK/pack.json')[0].size")
UNPACKED=$(node -p "require('$WORK/pack.json')[0].unpackedSize")
FILES=$(node -p "require('$WORK/pack.json')[0].files.map(f => f.path).join(' ')")

mkdir "$WORK/app"
cd "$WORK/app"
npm init -y > /dev/null
npm pkg set type=module > /dev/null
npm install --no-audit --no-fund --loglevel=error --prefer-offline --save-exact "$WORK/$TARBALL" "$OPENAI" "$ADMIN"
cp "$HERE/scripts/smoke.mjs" .

# Sizes, from the installed copy: the core is dist/index.js and every local module it imports.
node --input-type=module - "$WORK/app/node_modules/@tally/client" <<'EOF'
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
const root = process.argv[2];
const dist = join(root, "dist");
const imports = (file) => [...readFileSync(join(dist, file), "utf8").matchAll(/(?:import|export)[^;]*?from\s+"\.\/([^"]+)"/g)].map((m) => m[1]);
const core = new Set();
const visit = (file) => { if (!core.has(file)) { core.add(file); imports(file).forEach(visit); } };
visit("index.js");
const size = (file) => statSync(join(dist, file)).size;
const js = [...core].reduce((sum, file) => sum + size(file), 0);
const dts = [...core].map((file) => file.replace(/\.js$/, ".d.ts")).reduce((sum, file) => sum + size(file), 0);
const all = (dir) => readdirSync(dir, { withFileTypes: true }).reduce((sum, entry) => sum + (entry.isDirectory() ? all(join(dir, entry.name)) : statSync(join(dir, entry.name)).size), 0);
const kb = (bytes) => `${(bytes / 1000).toFixed(1)} kB`;
console.log(`core: ${[...core].sort().join(" ")}`);
console.log(`core size unpacked: ${kb(js)} of JavaScript (${js} bytes), ${kb(js + dts)} with its type declarations`);
console.log(`whole package unpacked: ${kb(all(root))} (every subpath, README, package.json)`);
const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
if (manifest.dependencies && Object.keys(manifest.dependencies).length > 0) throw new Error("the package has runtime dependencies");
EOF
echo "tarball: $TARBALL, $PACKED bytes packed, $UNPACKED bytes unpacked (npm pack), files: $FILES"

node smoke.mjs
