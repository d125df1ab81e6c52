// Unit tests of the page's pure decisions (src/logic.ts, src/errors.ts), compiled on the fly
// with esbuild (Vite's own compiler) so Node runs them without a TypeScript toolchain.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { build } from "esbuild";

async function load(entry) {
  const out = await build({ entryPoints: [entry], bundle: true, format: "esm", write: false, platform: "neutral" });
  const dir = mkdtempSync(join(tmpdir(), "moviebook-web-unit-"));
  const file = join(dir, "mod.mjs");
  writeFileSync(file, out.outputFiles[0].text);
  return import(pathToFileURL(file).href);
}
const logic = await load("src/logic.ts");
const { describe } = await load("src/errors.ts");

const seat = (seatNumber, row, number, seatType = "STANDARD", price = 10, status = "AVAILABLE") => ({
  seatNumber, row, number, seatType, price, status,
});

test("layout groups seats by row in order, numbers ascending", () => {
  const rows = logic.layout([seat("B2", "B", 2), seat("A10", "A", 10), seat("A2", "A", 2), seat("AA1", "AA", 1), seat("B1", "B", 1)]);
  assert.deepEqual(rows.map((r) => r.row), ["A", "B", "AA"]);
  assert.deepEqual(rows[0].seats.map((s) => s.number), [2, 10]);
});

test("seat types with price ranges, cheapest first", () => {
  const t = logic.seatTypes([seat("A1", "A", 1, "VIP", 20), seat("A2", "A", 2, "STANDARD", 10), seat("A3", "A", 3, "VIP", 25)]);
  assert.deepEqual(t, [{ type: "STANDARD", min: 10, max: 10 }, { type: "VIP", min: 20, max: 25 }]);
});

test("live changes replace statuses and a taken selection is noticed", () => {
  const seats = logic.applyStatuses([seat("A1", "A", 1), seat("A2", "A", 2)], [{ seatNumber: "A2", status: "LOCKED" }]);
  assert.deepEqual(seats.map((s) => s.status), ["AVAILABLE", "LOCKED"]);
  assert.deepEqual(logic.lostSelection(["A1", "A2"], seats), ["A2"]);
});

test("countdown and money", () => {
  assert.equal(logic.secondsLeft(new Date(10_500).toISOString(), 0), 11);
  assert.equal(logic.secondsLeft(new Date(0).toISOString(), 5000), 0);
  assert.equal(logic.clock(125), "2:05");
  assert.equal(logic.money(12.5), "$12.50");
});

test("arrow keys move within the grid and stop at its edges", () => {
  const rows = [3, 5];
  assert.deepEqual(logic.moveFocus(rows, { row: 0, col: 0 }, "ArrowRight"), { row: 0, col: 1 });
  assert.equal(logic.moveFocus(rows, { row: 0, col: 0 }, "ArrowLeft"), null);
  assert.deepEqual(logic.moveFocus(rows, { row: 1, col: 4 }, "ArrowUp"), { row: 0, col: 2 });
  assert.equal(logic.moveFocus(rows, { row: 1, col: 0 }, "ArrowDown"), null);
  assert.deepEqual(logic.moveFocus(rows, { row: 1, col: 2 }, "End"), { row: 1, col: 4 });
  assert.equal(logic.moveFocus(rows, { row: 0, col: 0 }, "x"), null);
});

test("error codes in words", () => {
  assert.match(describe({ code: "PAYMENT_DECLINED", message: "", extensions: { reason: "CARD_DECLINED" } }), /card was declined/);
  assert.match(describe({ code: "PAYMENT_DECLINED", message: "", extensions: { reason: "INSUFFICIENT_FUNDS" } }), /insufficient funds/);
  assert.match(describe({ code: "SEATS_UNAVAILABLE", message: "", extensions: { unavailableSeats: ["A1", "A2"] } }), /A1, A2 were just taken/);
  assert.match(describe({ code: "UNAUTHENTICATED", message: "", extensions: { reason: "TOKEN_EXPIRED" } }), /session has expired/);
  assert.match(describe({ code: "HOLD_EXPIRED", message: "" }), /hold on these seats ran out/);
  assert.match(describe({ code: "INVALID_STATE", message: "", extensions: { status: "CANCELLED" } }), /it is cancelled/);
  assert.match(describe({ code: "SOMETHING_NEW", message: "" }), /SOMETHING_NEW/);
});
