// Indent the built JavaScript by 2 spaces instead of tsc's 4 (tsc has no option for it): a smaller package.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const dir = process.argv[2] ?? "dist";
for (const name of readdirSync(dir).filter((file) => file.endsWith(".js"))) {
  const path = join(dir, name);
  const text = readFileSync(path, "utf8");
  // Leading spaces inside a template literal that spans lines would be content: refuse rather than change it.
  if (text.split("\n").some((line) => (line.match(/`/g) ?? []).length % 2 === 1)) {
    throw new Error(`${path}: a line with an odd number of backticks; not re-indenting`);
  }
  writeFileSync(path, text.replace(/^(?: {4})+/gm, (indent) => " ".repeat(indent.length / 2)));
}
