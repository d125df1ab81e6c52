// Small pure decisions of the page (tested in test/unit/logic.test.mjs).

import type { Seat, SeatStatus } from "./api";

/** Seats grouped by row (rows in layout order, seats by number): the map's grid. */
export function layout(seats: Seat[]): { row: string; seats: Seat[] }[] {
  const rows = new Map<string, Seat[]>();
  for (const s of seats) {
    const r = rows.get(s.row) ?? [];
    r.push(s);
    rows.set(s.row, r);
  }
  const order = (a: string, b: string) => a.length - b.length || a.localeCompare(b);
  return [...rows.keys()].sort(order).map((row) => ({
    row,
    seats: (rows.get(row) ?? []).sort((a, b) => a.number - b.number),
  }));
}

/** The seat types present with their price range, for the legend. */
export function seatTypes(seats: Seat[]): { type: string; min: number; max: number }[] {
  const types = new Map<string, { min: number; max: number }>();
  for (const s of seats) {
    const t = types.get(s.seatType);
    if (!t) types.set(s.seatType, { min: s.price, max: s.price });
    else types.set(s.seatType, { min: Math.min(t.min, s.price), max: Math.max(t.max, s.price) });
  }
  return [...types.entries()]
    .map(([type, r]) => ({ type, ...r }))
    .sort((a, b) => a.min - b.min || a.type.localeCompare(b.type));
}

/** A live update applied to the map: statuses replaced by seat number, everything else kept. */
export function applyStatuses(seats: Seat[], changes: { seatNumber: string; status: SeatStatus }[]): Seat[] {
  const by = new Map(changes.map((c) => [c.seatNumber, c.status]));
  return seats.map((s) => (by.has(s.seatNumber) ? { ...s, status: by.get(s.seatNumber) as SeatStatus } : s));
}

/** Selected seats that are no longer available (someone else took them meanwhile). */
export function lostSelection(selected: string[], seats: Seat[]): string[] {
  const status = new Map(seats.map((s) => [s.seatNumber, s.status]));
  return selected.filter((n) => status.get(n) !== "AVAILABLE");
}

/** Seconds left until `iso` (never negative). */
export function secondsLeft(iso: string, now: number): number {
  return Math.max(0, Math.ceil((Date.parse(iso) - now) / 1000));
}

/** 125 → "2:05". */
export function clock(seconds: number): string {
  const m = Math.floor(seconds / 60);
  const s = seconds % 60;
  return `${m}:${String(s).padStart(2, "0")}`;
}

export function money(amount: number, currency = "USD"): string {
  try {
    return new Intl.NumberFormat("en-US", { style: "currency", currency }).format(amount);
  } catch {
    return `${amount.toFixed(2)} ${currency}`;
  }
}

/** The next seat index for an arrow key in a grid of rows (roving focus), or null. */
export function moveFocus(
  rows: number[],
  at: { row: number; col: number },
  key: string,
): { row: number; col: number } | null {
  const { row, col } = at;
  switch (key) {
    case "ArrowLeft":
      return col > 0 ? { row, col: col - 1 } : null;
    case "ArrowRight":
      return col < rows[row] - 1 ? { row, col: col + 1 } : null;
    case "ArrowUp":
      return row > 0 ? { row: row - 1, col: Math.min(col, rows[row - 1] - 1) } : null;
    case "ArrowDown":
      return row < rows.length - 1 ? { row: row + 1, col: Math.min(col, rows[row + 1] - 1) } : null;
    case "Home":
      return { row, col: 0 };
    case "End":
      return { row, col: rows[row] - 1 };
    default:
      return null;
  }
}

export const STATUS_WORDS: Record<string, string> = {
  PENDING_PAYMENT: "Held, awaiting payment",
  PAYING: "Payment in progress",
  PAYMENT_FAILED: "Payment declined",
  CONFIRMED: "Confirmed",
  CANCELLED: "Cancelled",
  EXPIRED: "Hold expired",
  REFUNDED: "Refunded",
};
