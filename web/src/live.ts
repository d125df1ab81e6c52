// The live seat map: one graphql-transport-ws connection to /graphql/ws (opened on first use,
// closed by graphql-ws when nothing listens), one `seatsChanged` subscription per open map.
import { createClient, type Client } from "graphql-ws";
import type { SeatStatus } from "./api";

export interface SeatsChanged {
  showtimeId: string;
  seats: { seatNumber: string; status: SeatStatus }[];
}

let client: Client | null = null;
let live = false;
const listeners = new Set<(live: boolean) => void>();
const setLive = (v: boolean) => {
  live = v;
  listeners.forEach((l) => l(v));
};

function ws(): Client {
  if (!client) {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql/ws`;
    client = createClient({
      url,
      lazy: true,
      retryAttempts: Infinity,
      // back off up to ~10 s between reconnects, jittered, so a restarted pod is not stampeded
      retryWait: (n) => new Promise((r) => setTimeout(r, Math.min(10_000, 500 * 2 ** n) * (0.5 + Math.random()))),
      shouldRetry: () => true,
    });
    client.on("connected", () => setLive(true));
    client.on("closed", () => setLive(false));
  }
  return client;
}

/** Calls `onChange` for every change of the showtime's seats; `onState` says whether the feed
 * is live. Returns the unsubscribe function. */
export function watchSeats(
  showtimeId: string,
  onChange: (c: SeatsChanged) => void,
  onState: (live: boolean) => void,
): () => void {
  const c = ws();
  // "live" once this subscription's first message (the whole map) is in, and while connected
  let started = false;
  const state = (v: boolean) => onState(v && started);
  listeners.add(state);
  const stop = c.subscribe<{ seatsChanged: SeatsChanged }>(
    {
      query: "subscription($id: ID!) { seatsChanged(showtimeId: $id) { showtimeId seats { seatNumber status } } }",
      variables: { id: showtimeId },
    },
    {
      next: (msg) => {
        if (!msg.data?.seatsChanged) return;
        onChange(msg.data.seatsChanged);
        if (!started) {
          started = true;
          state(live);
        }
      },
      error: () => onState(false),
      complete: () => undefined,
    },
  );
  return () => {
    stop();
    listeners.delete(state);
  };
}
