/** scripts/indent.mjs: the build's re-indenter halves tsc's indentation, never a literal's text. */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url)); // <out dir>/test/unit
const script = pathToFileURL(join(here, "..", "..", "..", "scripts", "indent.mjs")).href;

interface Indent {
  reindent(text: string): string;
}

const SAMPLE = [
  "export const sql = \"SELECT a,\\",
  "    b FROM t\";",
  "export function help(name) {",
  "    if (/[`'\"]/.test(name)) {",
  "        return `usage: ${name.replace(/`/g, \"\")}",
  "    tally ${{ record: \"record\" }.record}    --cost 0.01",
  "        (done)`;",
  "    }",
  "    return 8 / 2 / `",
  "    x`.length;",
  "}",
  "",
].join("\n");

test("the re-indenter halves the indentation outside literals and keeps every literal as it is", async () => {
  const { reindent } = (await import(script)) as Indent;

  const out = reindent(SAMPLE);

  assert.equal(
    out,
    [
      "export const sql = \"SELECT a,\\",
      "    b FROM t\";",
      "export function help(name) {",
      "  if (/[`'\"]/.test(name)) {",
      "    return `usage: ${name.replace(/`/g, \"\")}",
      "    tally ${{ record: \"record\" }.record}    --cost 0.01",
      "        (done)`;",
      "  }",
      "  return 8 / 2 / `",
      "    x`.length;",
      "}",
      "",
    ].join("\n"),
  );
  const load = (text: string) => import(`data:text/javascript,${encodeURIComponent(text)}`) as Promise<{ sql: string; help(name: string): string }>;
  const [before, after] = await Promise.all([load(SAMPLE), load(out)]);
  assert.equal(after.sql, before.sql);
  assert.equal(after.help("x`y"), before.help("x`y"));
});

test("the re-indenter refuses what it cannot scan", async () => {
  const { reindent } = (await import(script)) as Indent;

  assert.throws(() => reindent("const s = `never closed\n    ${"), /cannot scan|unbalanced/);
});
