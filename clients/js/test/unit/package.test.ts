/** The package: its exports map, a core without dependencies, wrappers that import no provider, a README showing every export. */

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url)); // dist-test/test/unit
const root = join(here, "..", "..", "..");
const compiled = join(here, "..", "..", "src");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  exports: Record<string, { types: string; import: string } | string>;
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
};
const SUBPATHS = [".", "./openai", "./anthropic", "./ai-sdk", "./genkit", "./firebase-ai", "./admin", "./web"];

function staticImports(file: string): string[] {
  const text = readFileSync(join(compiled, file), "utf8");
  return [...text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"/gm)].map((match) => match[1] as string);
}

/** A module and every local module it imports, transitively. */
function closure(file: string, seen = new Set<string>()): Set<string> {
  if (seen.has(file)) return seen;
  seen.add(file);
  for (const specifier of staticImports(file)) if (specifier.startsWith("./")) closure(specifier.slice(2), seen);
  return seen;
}

test("every subpath has types and an ES module, and no runtime dependency is declared", () => {
  for (const subpath of SUBPATHS) {
    const entry = pkg.exports[subpath];
    assert.ok(typeof entry === "object", subpath);
    const name = subpath === "." ? "index" : subpath.slice(2);
    assert.deepEqual(entry, { types: `./dist/${name}.d.ts`, import: `./dist/${name}.js` });
    assert.ok(readdirSync(compiled).includes(`${name}.js`), name);
  }
  assert.equal(pkg.dependencies, undefined);
  for (const peer of Object.keys(pkg.peerDependencies ?? {})) assert.equal(pkg.peerDependenciesMeta?.[peer]?.optional, true);
});

test("the core imports only its own modules", () => {
  for (const file of closure("index.js")) {
    for (const specifier of staticImports(file)) assert.ok(specifier.startsWith("./"), `${file} imports ${specifier}`);
  }
});

test("the provider wrappers import no provider package; only web imports firebase/firestore", () => {
  for (const name of ["openai", "anthropic", "ai-sdk", "genkit", "firebase-ai", "admin"]) {
    for (const file of closure(`${name}.js`)) {
      for (const specifier of staticImports(file)) assert.ok(specifier.startsWith("./"), `${file} imports ${specifier}`);
    }
  }
  assert.deepEqual(
    staticImports("web.js").filter((specifier) => !specifier.startsWith("./")),
    ["firebase/firestore"],
  );
});

test("the README shows every subpath and every value it exports", async () => {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  for (const subpath of SUBPATHS) {
    const name = subpath === "." ? "index" : subpath.slice(2);
    const specifier = subpath === "." ? "@tally/client" : `@tally/client/${name}`;
    assert.ok(readme.includes(`"${specifier}"`), `README imports nothing from ${specifier}`);
    if (name === "web") continue; // needs firebase/firestore: its names are checked below from the source
    const module = (await import(join(compiled, `${name}.js`))) as Record<string, unknown>;
    for (const exported of Object.keys(module)) assert.ok(readme.includes(exported), `README never mentions ${exported} (${specifier})`);
  }
  for (const exported of ["watchUsage", "usageFromDocument", "currentMonth", "nanosToUsd"]) assert.ok(readme.includes(exported), exported);
});
