// Preloaded into the emulator suite's Node process by scripts/with-emulators (node --require).
//
// The Auth emulator serves its REST API through exegesis, which by default compiles a JSON-schema
// validator for every parameter of every operation when the emulator starts: about 15 s of CPU
// on every start, before any request. exegesis has an option to compile each validator on its
// first use instead (`lazyCompileValidationSchemas`); firebase-tools does not set it, so this
// makes it the default. Requests are validated exactly as before. If exegesis is not where
// firebase-tools finds it, nothing is changed.
"use strict";

const path = require("node:path");

try {
  const toolsDir = path.dirname(require.resolve("firebase-tools/package.json"));
  const optionsPath = require.resolve("exegesis/lib/options", { paths: [toolsDir] });
  const options = require(optionsPath);
  const compile = options.compileOptions;
  if (typeof compile === "function") {
    options.compileOptions = (given) => compile({ lazyCompileValidationSchemas: true, ...given });
  }
} catch {
  // firebase-tools or exegesis moved: start the emulators unchanged.
}
