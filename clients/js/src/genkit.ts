/**
 * `@tally/client/genkit`: record a Genkit response's `usage` as one AI step, by hand
 * (`recordGenkit`) or for every call of `ai.generate({ use: [genkitMiddleware(...)] })`.
 * The `genkit` package is never imported.
 */

import { checkOptions, count, field, modelName, recordCall, type RecordOptions } from "./recording.js";
import type { Units } from "./values.js";

export type { RecordOptions } from "./recording.js";

/** Options of the Genkit helpers: where calls are recorded, and the model (`googleai/gemini-2.5-flash` or a reference). */
export interface GenkitRecordOptions extends RecordOptions {
  /** The model name or reference (`{ name }`); its plugin prefix gives the provider. */
  model?: string | { name: string } | undefined;
  /** The provider's name in Tally (default: from the model's plugin prefix, else `google`). */
  provider?: string | undefined;
}

const PLUGIN_PROVIDERS: Record<string, string> = {
  googleai: "google",
  "google-genai": "google",
  vertexai: "google",
  "vertex-ai": "google",
  openai: "openai",
  "compat-oai": "openai",
  anthropic: "anthropic",
};

/** Tally units of a Genkit `usage`: cached input apart, thoughts tokens counted as output. */
export function genkitUnits(model: unknown, usage: unknown): Units {
  const input = count(field(usage, "inputTokens"));
  const cached = Math.min(count(field(usage, "cachedContentTokens")), input);
  return {
    model: modelName(model),
    inputTokens: input - cached,
    outputTokens: count(field(usage, "outputTokens")) + count(field(usage, "thoughtsTokens")),
    cacheReadTokens: cached,
    cacheWriteTokens: 0,
    requests: 1,
  };
}

/** Return [provider, model] from a Genkit model name (`googleai/gemini-2.5-flash` → google, gemini-2.5-flash). */
export function splitGenkitModel(name: string, provider: string | undefined): [string, string] {
  const slash = name.indexOf("/");
  if (slash < 0) return [provider ?? "google", name];
  const plugin = name.slice(0, slash);
  return [provider ?? PLUGIN_PROVIDERS[plugin] ?? modelName(plugin), name.slice(slash + 1)];
}

function modelOf(options: GenkitRecordOptions, response: unknown): string | undefined {
  const given = options.model;
  if (typeof given === "string") return given;
  if (given !== undefined) return given.name;
  for (const found of [field(response, "model"), field(field(response, "custom"), "modelVersion"), field(field(response, "request"), "model")]) {
    if (typeof found === "string" && found !== "") return found;
  }
  return undefined;
}

/** Record a Genkit `GenerateResponse` (or its data) as one AI step; never throws (a failure is logged). */
export function recordGenkit(response: unknown, options: GenkitRecordOptions): void {
  try {
    const usage = field(response, "usage");
    if (typeof usage !== "object" || usage === null) {
      options.tally.logger.warn("tally: a Genkit response carried no usage; nothing recorded");
      return;
    }
    const name = modelOf(options, response);
    if (name === undefined) options.tally.logger.warn("tally: a Genkit response without a model name: give options.model");
    const [provider, model] = splitGenkitModel(name ?? "unknown", options.provider);
    recordCall(checkOptions(options), modelName(provider), "genkit", genkitUnits(model, usage), { api: "genkit" });
  } catch (error) {
    options.tally.logger.error(`tally: recording a Genkit response failed: ${String(error)}`);
  }
}

/** A Genkit model middleware: `(request, next) => response`. */
export type GenkitMiddleware = <Q, R>(request: Q, next: (request?: Q) => Promise<R>) => Promise<R>;

/** Return a Genkit model middleware (`ai.generate({ use: [...] })`) that records each response, streams included. */
export function genkitMiddleware(options: GenkitRecordOptions): GenkitMiddleware {
  checkOptions(options);
  return async (request, next) => {
    const response = await next(request);
    recordGenkit(response, options);
    return response;
  };
}
