/** Values on the wire: exact decimal costs, ids, error envelopes. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { errorFromBody } from "../../src/errors.js";
import { FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, TallyError, Unauthenticated, Unavailable } from "../../src/index.js";
import { costText, metadataBody, newOperationId, newReservationId, newSessionId, timestampValue } from "../../src/values.js";

test("a cost longer than 64 characters is rounded to nano-USD half-even", () => {
  const long = (text: string): string => text.padEnd(66, "0");
  assert.equal(costText("cost", `${long("0.1234567894999999999")}1`), "0.123456789");
  assert.equal(costText("cost", long("0.1234567895")), "0.123456790");
  assert.equal(costText("cost", long("0.1234567885")), "0.123456788");
  assert.equal(costText("cost", `${long("0.0000000005")}1`), "0.000000001");
  assert.equal(costText("cost", 5e-324), "0.000000000");
});

test("numbers convert through their shortest decimal form, never their binary value", () => {
  assert.equal(costText("cost", 0.1), "0.1");
  assert.equal(costText("cost", 0.1 + 0.2), "0.30000000000000004");
  assert.equal(costText("cost", 1e-7), "0.0000001");
  assert.equal(costText("cost", "1.50"), "1.50");
  assert.equal(costText("cost", "1.0e1"), "10");
  assert.equal(costText("cost", ".5"), "0.5");
  assert.equal(costText("cost", "1000.000"), "1000.000");
});

test("a negative zero is plain zero", () => {
  assert.equal(costText("cost", -0), "0");
  assert.equal(costText("cost", "-0.000"), "0");
});

test("timestamps: a Date, ISO-8601 with an offset, epoch milliseconds", () => {
  assert.equal(timestampValue("t", new Date(Date.UTC(2026, 10, 14, 10, 4, 9, 794))), "2026-11-14T10:04:09.794Z");
  assert.equal(timestampValue("t", "2026-11-14T12:04:09.794123+02:00"), "2026-11-14T10:04:09.794Z");
  assert.equal(timestampValue("t", "2026-11-14 10:04Z"), "2026-11-14T10:04:00.000Z");
  assert.equal(timestampValue("t", 1_760_436_249_794), 1_760_436_249_794);
  assert.throws(() => timestampValue("t", new Date(Number.NaN)), InvalidArgument);
});

test("generated ids follow the documented shapes", () => {
  assert.match(newOperationId(), /^usage_\d{13}_[0-9a-f]{16}$/);
  assert.match(newSessionId(), /^session_\d{13}_[0-9a-f]{16}$/);
  assert.match(newReservationId(), /^res_\d{13}_[0-9a-f]{16}$/);
});

test("error envelopes map to error types", () => {
  const cases: [number, unknown, typeof TallyError, string][] = [
    [400, { error: { status: "INVALID_ARGUMENT", message: "m" } }, InvalidArgument, "INVALID_ARGUMENT"],
    [401, { error: { status: "UNAUTHENTICATED", message: "m" } }, Unauthenticated, "UNAUTHENTICATED"],
    [403, { error: { status: "PERMISSION_DENIED", message: "m" } }, PermissionDenied, "PERMISSION_DENIED"],
    [404, null, NotFound, "NOT_FOUND"],
    [409, { error: { status: "FAILED_PRECONDITION", message: "m" } }, FailedPrecondition, "FAILED_PRECONDITION"],
    [503, { error: { status: "UNAVAILABLE", message: "m" } }, Unavailable, "UNAVAILABLE"],
    [500, { error: { status: "INTERNAL", message: "m" } }, Unavailable, "INTERNAL"],
    [429, "not json", Unavailable, "UNAVAILABLE"],
    [413, null, TallyError, "PAYLOAD_TOO_LARGE"],
    [415, null, TallyError, "UNSUPPORTED_MEDIA_TYPE"],
  ];
  for (const [status, body, type, canonical] of cases) {
    const error = errorFromBody(status, body);
    assert.equal(error.constructor, type, `${status}`);
    assert.equal(error.status, canonical);
    assert.equal(error.httpStatus, status);
    assert.ok(error instanceof TallyError && error instanceof Error);
  }
});

test("an error's details and its toString", () => {
  const error = errorFromBody(400, { error: { status: "INVALID_ARGUMENT", message: "steps[0].cost: must be >= 0", details: [{ field: "steps[0].cost", problem: "must be >= 0" }] } });

  assert.deepEqual(error.details, [{ field: "steps[0].cost", problem: "must be >= 0" }]);
  assert.equal(String(error), "INVALID_ARGUMENT: steps[0].cost: must be >= 0");
  assert.equal(error.name, "InvalidArgument");
});

test("metadata the server refuses is refused here: unpaired surrogates, integers past 64 bits", () => {
  for (const bad of [{ text: "a\uD800b" }, { ["k\uDC00"]: 1 }, { big: 2 ** 63 }, { small: -(2 ** 63) - 4096 }]) {
    assert.throws(() => metadataBody("metadata", bad), InvalidArgument, JSON.stringify(bad));
  }
  assert.deepEqual(metadataBody("metadata", { emoji: "😀", max: 2 ** 63 - 1024, min: -(2 ** 63) + 1024, huge: 1e21 }), {
    emoji: "😀",
    max: 2 ** 63 - 1024,
    min: -(2 ** 63) + 1024,
    huge: 1e21,
  });
});

test("-2**63 is refused: it is written -9223372036854776000, which the server reads as past the 64-bit bound", () => {
  assert.equal(JSON.stringify(-(2 ** 63)), "-9223372036854776000");
  assert.throws(() => metadataBody("metadata", { min: -(2 ** 63) }), /integers must fit in 64 bits/);
  assert.throws(() => metadataBody("metadata", { list: [2 ** 63] }), /integers must fit in 64 bits/);
  assert.doesNotThrow(() => metadataBody("metadata", { min: -(2 ** 63) + 1024, max: 2 ** 63 - 1024 })); // written -9223372036854775000, 9223372036854775000
});

test("metadata keys are measured in code points, as the server counts them", () => {
  assert.doesNotThrow(() => metadataBody("metadata", { ["😀".repeat(256)]: 1 })); // 512 UTF-16 units, 256 characters
  assert.throws(() => metadataBody("metadata", { ["😀".repeat(257)]: 1 }), /keys must be 1-256 characters/);
  assert.throws(() => metadataBody("metadata", { ["a".repeat(257)]: 1 }), /keys must be 1-256 characters/);
});

test("the 4 KiB of metadata are measured as the server writes numbers (1e-07, 1e-05)", () => {
  const fill = (number: number, total: number) => ({ x: "a".repeat(total - JSON.stringify({ x: "", f: number }).length), f: number });

  assert.throws(() => metadataBody("metadata", fill(1e-7, 4096)), /at most 4096 bytes as JSON \(got 4097\)/);
  assert.doesNotThrow(() => metadataBody("metadata", fill(1e-5, 4097))); // Python writes 1e-05, two bytes shorter
  assert.doesNotThrow(() => metadataBody("metadata", fill(0.5, 4096)));
});
