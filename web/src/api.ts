// The storefront's only door to the system: GraphQL on /graphql (booking service) and the
// user service's /api/v1/register and /api/v1/login, both on this page's origin (Kong in a
// cluster, the dev gateway under `make dev`). Errors come back as ApiError with the API's code,
// and `describe` (errors.ts) turns that code into words.

export class ApiError extends Error {
  constructor(
    public code: string,
    message: string,
    public extensions: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export interface Session {
  token: string;
  user: { id: string; email: string; first_name: string; last_name: string };
}

const SESSION_KEY = "moviebook.session";

export function loadSession(): Session | null {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) ?? "null") as Session | null;
    if (!s?.token) return null;
    // The token's own expiry decides: an expired session is dropped instead of failing later.
    const payload = JSON.parse(atob(s.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    if (typeof payload.exp === "number" && payload.exp * 1000 < Date.now()) return null;
    return s;
  } catch {
    return null;
  }
}

export function saveSession(s: Session | null) {
  if (s) localStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else localStorage.removeItem(SESSION_KEY);
}

async function readJson(resp: Response): Promise<any> {
  const text = await resp.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/** Runs one GraphQL operation; the first error becomes an ApiError. */
export async function gql<T>(
  query: string,
  variables: Record<string, unknown> = {},
  token?: string,
): Promise<T> {
  let resp: Response;
  try {
    resp = await fetch("/graphql", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    throw new ApiError("NETWORK", "network error");
  }
  const body = await readJson(resp);
  if (resp.status === 429) throw new ApiError("RATE_LIMITED", "too many requests");
  const err = body?.errors?.[0];
  if (err) throw new ApiError(err.extensions?.code ?? "INTERNAL", err.message, err.extensions ?? {});
  if (!resp.ok || !body?.data) throw new ApiError(resp.status >= 500 ? "SERVICE_UNAVAILABLE" : "INTERNAL", `HTTP ${resp.status}`);
  return body.data as T;
}

async function rest(path: string, payload: unknown): Promise<any> {
  let resp: Response;
  try {
    resp = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(payload),
    });
  } catch {
    throw new ApiError("NETWORK", "network error");
  }
  const body = await readJson(resp);
  if (resp.status === 429) throw new ApiError("RATE_LIMITED", "too many requests");
  if (!resp.ok) {
    const e = body?.error;
    throw new ApiError(e?.code ?? (resp.status >= 500 ? "SERVICE_UNAVAILABLE" : "INTERNAL"), e?.message ?? `HTTP ${resp.status}`);
  }
  return body;
}

export async function login(email: string, password: string): Promise<Session> {
  const body = await rest("/api/v1/login", { email, password });
  return { token: body.token, user: body.user };
}

export async function register(
  email: string,
  password: string,
  first_name: string,
  last_name: string,
): Promise<Session> {
  await rest("/api/v1/register", { email, password, first_name, last_name });
  return login(email, password);
}

// ---- the operations the page uses ----------------------------------------------------------

export interface ShowtimeSummary {
  id: string;
  startTime: string | null;
  basePrice: number;
  availableSeats: number;
  totalSeats: number;
  screenName: string;
  cinema: { name: string; location: string } | null;
}
export interface MovieSummary {
  id: string;
  title: string;
  genre: string;
  duration: number;
  rating: string;
  description: string;
  showtimes: ShowtimeSummary[];
}
export type SeatStatus = "AVAILABLE" | "LOCKED" | "BOOKED" | "MAINTENANCE";
export interface Seat {
  seatNumber: string;
  row: string;
  number: number;
  seatType: string;
  price: number;
  status: SeatStatus;
}
export interface ShowtimeDetail extends ShowtimeSummary {
  movie: { id: string; title: string; duration: number; rating: string } | null;
  seats: Seat[];
}
export interface Booking {
  id: string;
  showtimeId: string;
  seats: string[];
  totalAmount: number;
  currency: string;
  status: string;
  movieTitle: string;
  cinemaName: string;
  holdExpiresAt: string;
  failureReason: string | null;
  createdAt: string;
  confirmedAt: string | null;
  ticket: string | null;
  showtime: { startTime: string | null; screenName: string } | null;
}

const BOOKING_FIELDS = `id showtimeId seats totalAmount currency status movieTitle cinemaName
  holdExpiresAt failureReason createdAt confirmedAt ticket showtime { startTime screenName }`;

/** Movies per page of the catalogue (see `api.movies`). */
export const MOVIES_PAGE = 20;

export const api = {
  /** One page of the catalogue. The API prices `movies` by `limit` × what each movie asks
   * for (GRAPHQL_MAX_COMPLEXITY 500): a page of MOVIES_PAGE with its showtimes stays inside. */
  movies: (offset = 0) =>
    gql<{ movies: MovieSummary[] }>(
      `query($limit: Int!, $offset: Int!) { movies(limit: $limit, offset: $offset) {
          id title genre duration rating description
          showtimes { id startTime basePrice availableSeats totalSeats screenName cinema { name location } } } }`,
      { limit: MOVIES_PAGE, offset },
    ).then((d) => d.movies),
  showtime: (id: string) =>
    gql<{ showtime: ShowtimeDetail | null }>(
      `query($id: ID!) { showtime(id: $id) { id startTime basePrice availableSeats totalSeats screenName
          cinema { name location } movie { id title duration rating }
          seats { seatNumber row number seatType price status } } }`,
      { id },
    ).then((d) => d.showtime),
  createBooking: (s: Session, showtimeId: string, seatNumbers: string[]) =>
    gql<{ createBooking: { booking: Booking } }>(
      `mutation($u: ID!, $s: ID!, $seats: [String!]!) {
          createBooking(userId: $u, showtimeId: $s, seatNumbers: $seats) { booking { ${BOOKING_FIELDS} } } }`,
      { u: s.user.id, s: showtimeId, seats: seatNumbers },
      s.token,
    ).then((d) => d.createBooking.booking),
  booking: (s: Session, id: string) =>
    gql<{ getBooking: Booking }>(`query($id: ID!) { getBooking(bookingId: $id) { ${BOOKING_FIELDS} } }`, { id }, s.token).then(
      (d) => d.getBooking,
    ),
  myBookings: (s: Session) =>
    gql<{ myBookings: Booking[] }>(`{ myBookings { ${BOOKING_FIELDS} } }`, {}, s.token).then((d) => d.myBookings),
  pay: (s: Session, id: string, cardNumber: string) =>
    gql<{ processPayment: { booking: Booking } }>(
      `mutation($id: ID!, $d: String) { processPayment(bookingId: $id, paymentMethod: "credit_card", paymentDetails: $d) {
          booking { ${BOOKING_FIELDS} } } }`,
      { id, d: JSON.stringify({ card_number: cardNumber }) },
      s.token,
    ).then((d) => d.processPayment.booking),
  cancel: (s: Session, id: string) =>
    gql<{ cancelBooking: { booking: Booking } }>(
      `mutation($id: ID!) { cancelBooking(bookingId: $id) { booking { ${BOOKING_FIELDS} } } }`,
      { id },
      s.token,
    ).then((d) => d.cancelBooking.booking),
};
