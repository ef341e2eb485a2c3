// Indent the built JavaScript by 2 spaces instead of tsc's 4 (tsc has no option for it): a smaller package.
// Only the leading spaces of lines that start outside string and template literals change: TypeScript's
// scanner finds the literals (a line starting inside one, after a backslash-continued line of a string or
// within a multi-line template, keeps its text). Anything it cannot scan stops the build.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { LanguageVariant, SyntaxKind } from "typescript/unstable/ast";
import { createScanner } from "typescript/unstable/ast/scanner";

const LITERALS = new Set([
  SyntaxKind.StringLiteral,
  SyntaxKind.NoSubstitutionTemplateLiteral,
  SyntaxKind.TemplateHead,
  SyntaxKind.TemplateMiddle,
  SyntaxKind.TemplateTail,
]);

/** Tokens that end an operand: a `/` after one divides; after anything else it starts a regular expression. */
const OPERAND_ENDS = new Set([
  SyntaxKind.Identifier,
  SyntaxKind.PrivateIdentifier,
  SyntaxKind.NumericLiteral,
  SyntaxKind.BigIntLiteral,
  SyntaxKind.StringLiteral,
  SyntaxKind.NoSubstitutionTemplateLiteral,
  SyntaxKind.TemplateTail,
  SyntaxKind.RegularExpressionLiteral,
  SyntaxKind.CloseParenToken,
  SyntaxKind.CloseBracketToken,
  SyntaxKind.CloseBraceToken,
  SyntaxKind.PlusPlusToken,
  SyntaxKind.MinusMinusToken,
  SyntaxKind.ThisKeyword,
  SyntaxKind.SuperKeyword,
  SyntaxKind.TrueKeyword,
  SyntaxKind.FalseKeyword,
  SyntaxKind.NullKeyword,
]);

/** Return the [start, end) offsets of the string and template literal tokens of JavaScript `text`, in order. */
export function literalRanges(text) {
  const scanner = createScanner(true, LanguageVariant.Standard, text);
  const ranges = [];
  const braces = []; // per open `{` or template `${`: whether it is a template's
  let previous = SyntaxKind.Unknown;
  for (let kind = scanner.scan(); kind !== SyntaxKind.EndOfFile; kind = scanner.scan()) {
    if ((kind === SyntaxKind.SlashToken || kind === SyntaxKind.SlashEqualsToken) && !OPERAND_ENDS.has(previous)) {
      kind = scanner.reScanSlashToken();
    } else if (kind === SyntaxKind.OpenBraceToken) {
      braces.push(false);
    } else if (kind === SyntaxKind.CloseBraceToken && braces.pop() === true) {
      kind = scanner.reScanTemplateToken(false);
    }
    if (kind === SyntaxKind.TemplateHead || kind === SyntaxKind.TemplateMiddle) braces.push(true);
    if (kind === SyntaxKind.Unknown || scanner.isUnterminated()) {
      throw new Error(`cannot scan the token at offset ${scanner.getTokenStart()}: ${JSON.stringify(scanner.getTokenText().slice(0, 40))}`);
    }
    if (LITERALS.has(kind)) ranges.push([scanner.getTokenStart(), scanner.getTokenEnd()]);
    previous = kind;
  }
  if (braces.length > 0) throw new Error("unbalanced braces");
  return ranges;
}

/** Return `text` with each run of 4 leading spaces halved, on the lines that start outside a literal. */
export function reindent(text) {
  const ranges = literalRanges(text);
  let next = 0; // the first range that may still hold a line start
  let offset = 0;
  return text
    .split("\n")
    .map((line) => {
      const start = offset;
      offset += line.length + 1;
      while (next < ranges.length && ranges[next][1] <= start) next += 1;
      const inside = next < ranges.length && ranges[next][0] < start;
      return inside ? line : line.replace(/^(?: {4})+/, (indent) => " ".repeat(indent.length / 2));
    })
    .join("\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2] ?? "dist";
  for (const name of readdirSync(dir).filter((file) => file.endsWith(".js"))) {
    const path = join(dir, name);
    writeFileSync(path, reindent(readFileSync(path, "utf8")));
  }
}
