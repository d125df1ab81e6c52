// MovieBook storefront: browse → seat map → hold → log in → pay → ticket; my bookings, cancel.
// Routes live in the URL fragment (#/showtime/<id>, #/booking/<id>, ...) so the server serves
// one page and any gateway path works.
import { render } from "preact";
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import qrcode from "qrcode-generator";
import {
  api,
  ApiError,
  loadSession,
  MOVIES_PAGE,
  login,
  register,
  saveSession,
  type Booking,
  type MovieSummary,
  type Seat,
  type Session,
  type ShowtimeDetail,
} from "./api";
import { describe } from "./errors";
import { watchSeats } from "./live";
import {
  applyStatuses,
  clock,
  layout,
  lostSelection,
  money,
  moveFocus,
  secondsLeft,
  seatTypes,
  STATUS_WORDS,
} from "./logic";
import "./styles.css";

// ---- routing and session --------------------------------------------------------------------

function useRoute(): string[] {
  const read = () => location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = () => setRoute(read());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}

export const go = (path: string) => {
  location.hash = `#/${path}`;
};

function errorText(e: unknown): string {
  if (e instanceof ApiError) return describe(e);
  return describe({ code: "INTERNAL", message: String(e) });
}

/** An announced error message (role=alert), or nothing. */
function Problem({ error }: { error: string | null }) {
  return error ? (
    <p class="problem" role="alert">
      {error}
    </p>
  ) : null;
}

/** Moves focus to a page's heading when the page changes, so screen readers and keyboard
 * users start at the top of the new content. */
function Heading({ children }: { children: preact.ComponentChildren }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => ref.current?.focus(), []);
  return (
    <h1 tabIndex={-1} ref={ref}>
      {children}
    </h1>
  );
}

const when = (iso: string | null | undefined) =>
  iso
    ? new Date(iso).toLocaleString(undefined, { weekday: "short", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })
    : "time to be announced";

// ---- pages ----------------------------------------------------------------------------------

function Movies() {
  const [movies, setMovies] = useState<MovieSummary[] | null>(null);
  const [more, setMore] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const load = (offset: number) =>
    api.movies(offset).then(
      (page) => {
        setMovies((known) => [...(offset > 0 ? (known ?? []) : []), ...page]);
        setMore(page.length === MOVIES_PAGE);
      },
      (e) => setError(errorText(e)),
    );
  useEffect(() => {
    load(0);
  }, []);
  return (
    <section>
      <Heading>Now showing</Heading>
      <Problem error={error} />
      {!movies && !error && <p aria-busy="true">Loading movies…</p>}
      <ul class="movies">
        {movies?.map((m) => (
          <li class="movie" key={m.id}>
            <h2>{m.title}</h2>
            <p class="meta">
              {[m.genre, m.duration ? `${m.duration} min` : "", m.rating].filter(Boolean).join(" · ")}
            </p>
            {m.description && <p class="description">{m.description}</p>}
            {m.showtimes.length === 0 ? (
              <p class="meta">No upcoming showtimes.</p>
            ) : (
              <Showtimes movie={m} />
            )}
          </li>
        ))}
      </ul>
      {more && (
        <button type="button" onClick={() => load(movies?.length ?? 0)}>
          More movies
        </button>
      )}
    </section>
  );
}

/** The first showtimes of a movie, the rest behind a button (a week of them is a long list). */
function Showtimes({ movie }: { movie: MovieSummary }) {
  const [all, setAll] = useState(false);
  const shown = all ? movie.showtimes : movie.showtimes.slice(0, 6);
  return (
    <>
      <ul class="showtimes" aria-label={`Showtimes of ${movie.title}`}>
        {shown.map((s) => (
          <li key={s.id}>
            <a class="showtime" href={`#/showtime/${s.id}`} data-showtime={s.id}>
              <strong>{when(s.startTime)}</strong>
              <span>
                {s.cinema?.name ?? "Cinema"} · {s.screenName}
              </span>
              <span>
                from {money(s.basePrice)} · {s.availableSeats} of {s.totalSeats} seats free
              </span>
            </a>
          </li>
        ))}
      </ul>
      {movie.showtimes.length > shown.length && (
        <button type="button" class="link more" onClick={() => setAll(true)}>
          All {movie.showtimes.length} showtimes of {movie.title}
        </button>
      )}
    </>
  );
}

const STATUS_LABEL: Record<string, string> = {
  AVAILABLE: "available",
  LOCKED: "held by someone",
  BOOKED: "sold",
  MAINTENANCE: "out of service",
};

function SeatMap({
  seats,
  selected,
  toggle,
}: {
  seats: Seat[];
  selected: Set<string>;
  toggle: (s: Seat) => void;
}) {
  const rows = useMemo(() => layout(seats), [seats]);
  const [focus, setFocus] = useState({ row: 0, col: 0 });
  const refs = useRef(new Map<string, HTMLButtonElement>());
  const key = (r: number, c: number) => rows[r]?.seats[c]?.seatNumber ?? "";
  const onKey = (e: KeyboardEvent) => {
    const next = moveFocus(
      rows.map((r) => r.seats.length),
      focus,
      e.key,
    );
    if (next) {
      e.preventDefault();
      setFocus(next);
      refs.current.get(key(next.row, next.col))?.focus();
    }
  };
  return (
    <div class="seatmap" role="grid" aria-label="Seat map; use the arrow keys to move, Space to pick" onKeyDown={onKey}>
      <div class="screen" aria-hidden="true">
        screen
      </div>
      {rows.map((r, ri) => (
        <div class="row" role="row" key={r.row}>
          <span class="rowname" aria-hidden="true">
            {r.row}
          </span>
          {r.seats.map((s, ci) => {
            const picked = selected.has(s.seatNumber);
            const free = s.status === "AVAILABLE";
            return (
              <span role="gridcell" key={s.seatNumber}>
                <button
                  type="button"
                  ref={(el) => {
                    if (el) refs.current.set(s.seatNumber, el);
                  }}
                  class={`seat ${s.seatType.toLowerCase()} ${s.status.toLowerCase()}${picked ? " picked" : ""}`}
                  data-seat={s.seatNumber}
                  data-status={s.status}
                  tabIndex={focus.row === ri && focus.col === ci ? 0 : -1}
                  aria-pressed={picked}
                  aria-disabled={!free && !picked}
                  aria-label={`Row ${s.row} seat ${s.number}, ${s.seatType.toLowerCase()}, ${money(s.price)}, ${
                    picked ? "selected" : STATUS_LABEL[s.status] ?? s.status
                  }`}
                  onClick={() => {
                    setFocus({ row: ri, col: ci });
                    if (free || picked) toggle(s);
                  }}
                >
                  {s.number}
                </button>
              </span>
            );
          })}
        </div>
      ))}
    </div>
  );
}

function ShowtimePage({ id, session }: { id: string; session: Session | null }) {
  const [show, setShow] = useState<ShowtimeDetail | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [selected, setSelected] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);
  const [live, setLive] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);

  useEffect(() => {
    api.showtime(id).then(
      (s) => (s ? setShow(s) : setError("We could not find that showtime.")),
      (e) => setError(errorText(e)),
    );
    return watchSeats(
      id,
      (change) => setShow((s) => (s ? { ...s, seats: applyStatuses(s.seats, change.seats) } : s)),
      setLive,
    );
  }, [id]);

  // A seat someone else just took leaves the selection, with a word why.
  useEffect(() => {
    if (!show) return;
    const lost = lostSelection(selected, show.seats);
    if (lost.length) {
      setSelected((sel) => sel.filter((n) => !lost.includes(n)));
      setNotice(`${lost.join(", ")} ${lost.length === 1 ? "was" : "were"} just taken by someone else.`);
    }
  }, [show]);

  const picked = show?.seats.filter((s) => selected.includes(s.seatNumber)) ?? [];
  const total = picked.reduce((sum, s) => sum + s.price, 0);
  const toggle = useCallback((s: Seat) => {
    setNotice(null);
    setSelected((sel) => (sel.includes(s.seatNumber) ? sel.filter((n) => n !== s.seatNumber) : [...sel, s.seatNumber]));
  }, []);

  const hold = async () => {
    if (!session) {
      sessionStorage.setItem("moviebook.pending", JSON.stringify({ showtime: id, seats: selected }));
      go(`login/showtime/${id}`);
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const b = await api.createBooking(session, id, selected);
      go(`booking/${b.id}`);
    } catch (e) {
      setError(errorText(e));
      if (e instanceof ApiError && e.code === "SEATS_UNAVAILABLE") {
        api.showtime(id).then((s) => s && setShow(s), () => undefined);
      }
    } finally {
      setBusy(false);
    }
  };

  // Seats picked before logging in come back after it.
  useEffect(() => {
    const pending = JSON.parse(sessionStorage.getItem("moviebook.pending") ?? "null");
    if (pending?.showtime === id) {
      setSelected(pending.seats);
      sessionStorage.removeItem("moviebook.pending");
    }
  }, [id]);

  if (!show) {
    return (
      <section>
        <Heading>Seats</Heading>
        <Problem error={error} />
        {!error && <p aria-busy="true">Loading the seat map…</p>}
      </section>
    );
  }
  return (
    <section>
      <Heading>{show.movie?.title ?? "Showtime"}</Heading>
      <p class="meta">
        {when(show.startTime)} · {show.cinema?.name} · {show.screenName}
        <span class={`live ${live ? "on" : "off"}`} data-live={live ? "on" : "off"}>
          {live ? "live seat map" : "connecting…"}
        </span>
      </p>
      <ul class="legend" aria-label="Seat types and prices">
        {seatTypes(show.seats).map((t) => (
          <li key={t.type}>
            <span class={`swatch seat ${t.type.toLowerCase()}`} aria-hidden="true" />
            {t.type.toLowerCase()} {t.min === t.max ? money(t.min) : `${money(t.min)}–${money(t.max)}`}
          </li>
        ))}
        <li>
          <span class="swatch seat locked" aria-hidden="true" /> held
        </li>
        <li>
          <span class="swatch seat booked" aria-hidden="true" /> sold
        </li>
      </ul>
      <SeatMap seats={show.seats} selected={new Set(selected)} toggle={toggle} />
      <div aria-live="polite" class="notice">
        {notice}
      </div>
      <Problem error={error} />
      <div class="summary">
        <p aria-live="polite">
          {picked.length
            ? `${picked.map((s) => s.seatNumber).join(", ")}: ${money(total)}`
            : "Pick your seats on the map."}
        </p>
        <button type="button" class="primary" disabled={!picked.length || busy} onClick={hold}>
          {session ? `Hold ${picked.length || ""} seat${picked.length === 1 ? "" : "s"}` : "Log in to hold seats"}
        </button>
      </div>
    </section>
  );
}

function LoginPage({ next, onSession }: { next: string; onSession: (s: Session) => void }) {
  const [mode, setMode] = useState<"login" | "register">("login");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget as HTMLFormElement);
    const v = (k: string) => String(f.get(k) ?? "").trim();
    setBusy(true);
    setError(null);
    try {
      const s =
        mode === "login"
          ? await login(v("email"), String(f.get("password")))
          : await register(v("email"), String(f.get("password")), v("first"), v("last"));
      onSession(s);
      go(next || "");
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section class="narrow">
      <Heading>{mode === "login" ? "Log in" : "Create an account"}</Heading>
      <form onSubmit={submit} aria-describedby="login-problem">
        {mode === "register" && (
          <div class="two">
            <label>
              First name
              <input name="first" autoComplete="given-name" required />
            </label>
            <label>
              Last name
              <input name="last" autoComplete="family-name" required />
            </label>
          </div>
        )}
        <label>
          Email
          <input name="email" type="email" autoComplete="email" required />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            autoComplete={mode === "login" ? "current-password" : "new-password"}
            minLength={mode === "register" ? 8 : undefined}
            required
          />
        </label>
        <div id="login-problem">
          <Problem error={error} />
        </div>
        <button class="primary" type="submit" disabled={busy}>
          {mode === "login" ? "Log in" : "Create account"}
        </button>
      </form>
      <p>
        {mode === "login" ? "New here? " : "Have an account? "}
        <button type="button" class="link" onClick={() => (setError(null), setMode(mode === "login" ? "register" : "login"))}>
          {mode === "login" ? "Create an account" : "Log in instead"}
        </button>
      </p>
    </section>
  );
}

const CARDS = [
  { number: "4242424242424242", label: "Visa ending 4242 (approved)" },
  { number: "4111111111111111", label: "Visa ending 1111 (approved)" },
  { number: "4000000000000002", label: "Test card ending 0002 (declined)" },
  { number: "4000000000009995", label: "Test card ending 9995 (insufficient funds)" },
];

function useNow(active: boolean): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!active) return;
    const t = setInterval(() => setNow(Date.now()), 250);
    return () => clearInterval(t);
  }, [active]);
  return now;
}

function Ticket({ booking }: { booking: Booking }) {
  const svg = useMemo(() => {
    if (!booking.ticket) return null;
    const qr = qrcode(0, "M");
    qr.addData(booking.ticket);
    qr.make();
    return `data:image/svg+xml;charset=utf-8,${encodeURIComponent(qr.createSvgTag({ cellSize: 4, margin: 4, scalable: true }))}`;
  }, [booking.ticket]);
  return (
    <article class="ticket" aria-label="Your ticket">
      <h2>Your ticket</h2>
      <dl>
        <dt>Movie</dt>
        <dd>{booking.movieTitle}</dd>
        <dt>When</dt>
        <dd>{when(booking.showtime?.startTime)}</dd>
        <dt>Where</dt>
        <dd>
          {booking.cinemaName}
          {booking.showtime?.screenName ? ` · ${booking.showtime.screenName}` : ""}
        </dd>
        <dt>Seats</dt>
        <dd>{booking.seats.join(", ")}</dd>
        <dt>Paid</dt>
        <dd>{money(booking.totalAmount, booking.currency)}</dd>
        <dt>Booking</dt>
        <dd class="mono" data-booking-id={booking.id}>
          {booking.id}
        </dd>
      </dl>
      {svg ? (
        <img class="qr" src={svg} alt={`QR code of the signed ticket for booking ${booking.id}`} data-ticket={booking.ticket ?? ""} />
      ) : (
        <p class="meta">The QR code appears once the ticket is issued.</p>
      )}
    </article>
  );
}

function BookingPage({ id, session }: { id: string; session: Session | null }) {
  const [booking, setBooking] = useState<Booking | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [card, setCard] = useState(CARDS[0].number);
  const held = booking?.status === "PENDING_PAYMENT" || booking?.status === "PAYMENT_FAILED";
  const now = useNow(held);
  const left = booking ? secondsLeft(booking.holdExpiresAt, now) : 0;

  const reload = useCallback(() => {
    if (session) api.booking(session, id).then(setBooking, (e) => setError(errorText(e)));
  }, [id, session]);
  useEffect(reload, [reload]);
  // When the countdown reaches zero, the server's word decides (the sweeper marks it EXPIRED).
  useEffect(() => {
    if (!held || left > 0) return;
    const t = setInterval(reload, 1000);
    return () => clearInterval(t);
  }, [held, left === 0, reload]);

  if (!session) return <LoginRequired next={`booking/${id}`} />;
  if (!booking)
    return (
      <section>
        <Heading>Your booking</Heading>
        <Problem error={error} />
        {!error && <p aria-busy="true">Loading…</p>}
      </section>
    );

  const pay = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      setBooking(await api.pay(session, id, card.replace(/[\s-]/g, "")));
    } catch (err) {
      setError(errorText(err));
      reload();
    } finally {
      setBusy(false);
    }
  };
  const cancel = async () => {
    setBusy(true);
    setError(null);
    try {
      setBooking(await api.cancel(session, id));
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section>
      <Heading>{booking.status === "CONFIRMED" ? "You're going to the movies!" : "Your booking"}</Heading>
      <p class="status" data-status={booking.status}>
        {STATUS_WORDS[booking.status] ?? booking.status}
      </p>
      {booking.status === "CONFIRMED" && <Ticket booking={booking} />}
      {held && (
        <>
          <p class="meta">
            {booking.movieTitle} · {booking.cinemaName} · seats {booking.seats.join(", ")} ·{" "}
            {money(booking.totalAmount, booking.currency)}
          </p>
          <p class={`countdown${left <= 30 ? " low" : ""}`} role="timer" aria-live={left <= 30 ? "assertive" : "off"}>
            {left > 0 ? (
              <>
                Seats held for <strong data-countdown={left}>{clock(left)}</strong>
              </>
            ) : (
              "Your hold is running out…"
            )}
          </p>
          <form class="pay" onSubmit={pay}>
            <fieldset disabled={busy || left === 0}>
              <legend>Pay with a test card</legend>
              {CARDS.map((c) => (
                <label class="radio" key={c.number}>
                  <input type="radio" name="card" value={c.number} checked={card === c.number} onChange={() => setCard(c.number)} />
                  {c.label}
                </label>
              ))}
              <label>
                Card number
                <input
                  name="card_number"
                  inputMode="numeric"
                  autoComplete="cc-number"
                  value={card}
                  onInput={(e) => setCard((e.currentTarget as HTMLInputElement).value)}
                />
              </label>
              <button class="primary" type="submit">
                Pay {money(booking.totalAmount, booking.currency)}
              </button>
            </fieldset>
          </form>
        </>
      )}
      {booking.status === "EXPIRED" && (
        <p class="problem" role="alert">
          Your hold expired before payment, so the seats went back on sale. Nothing was charged.{" "}
          <a href={`#/showtime/${booking.showtimeId}`}>Pick seats again</a>
        </p>
      )}
      <Problem error={error} />
      {(held || booking.status === "CONFIRMED") && (
        <button type="button" class="secondary" disabled={busy} onClick={cancel}>
          {booking.status === "CONFIRMED" ? "Cancel and refund" : "Release the seats"}
        </button>
      )}
      <p>
        <a href="#/bookings">All my bookings</a>
      </p>
    </section>
  );
}

function BookingsPage({ session }: { session: Session | null }) {
  const [list, setList] = useState<Booking[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (session) api.myBookings(session).then(setList, (e) => setError(errorText(e)));
  }, [session]);
  if (!session) return <LoginRequired next="bookings" />;
  const cancel = async (b: Booking) => {
    setError(null);
    try {
      const done = await api.cancel(session, b.id);
      setList((l) => l?.map((x) => (x.id === done.id ? done : x)) ?? null);
    } catch (e) {
      setError(errorText(e));
    }
  };
  return (
    <section>
      <Heading>My bookings</Heading>
      <Problem error={error} />
      {!list && !error && <p aria-busy="true">Loading…</p>}
      {list?.length === 0 && (
        <p>
          No bookings yet. <a href="#/">Browse movies</a>
        </p>
      )}
      <ul class="bookings">
        {list?.map((b) => (
          <li key={b.id} class="booking" data-booking={b.id} data-status={b.status}>
            <a href={`#/booking/${b.id}`}>
              <strong>{b.movieTitle}</strong> · {when(b.showtime?.startTime)}
            </a>
            <span>
              {b.cinemaName} · seats {b.seats.join(", ")} · {money(b.totalAmount, b.currency)}
            </span>
            <span class="status">{STATUS_WORDS[b.status] ?? b.status}</span>
            {["PENDING_PAYMENT", "PAYMENT_FAILED", "CONFIRMED"].includes(b.status) && (
              <button type="button" class="secondary" onClick={() => cancel(b)}>
                Cancel booking {b.seats.join(", ")}
              </button>
            )}
          </li>
        ))}
      </ul>
    </section>
  );
}

function LoginRequired({ next }: { next: string }) {
  return (
    <section>
      <Heading>Please log in</Heading>
      <p>
        <a href={`#/login/${next}`}>Log in or create an account</a> to see this page.
      </p>
    </section>
  );
}

function App() {
  const route = useRoute();
  const [session, setSession] = useState<Session | null>(loadSession);
  const onSession = (s: Session | null) => {
    saveSession(s);
    setSession(s);
  };
  const [page, ...rest] = route;
  let body;
  switch (page) {
    case undefined:
      body = <Movies />;
      break;
    case "showtime":
      body = <ShowtimePage key={rest[0]} id={rest[0]} session={session} />;
      break;
    case "booking":
      body = <BookingPage key={rest[0]} id={rest[0]} session={session} />;
      break;
    case "bookings":
      body = <BookingsPage session={session} />;
      break;
    case "login":
      body = <LoginPage next={rest.join("/")} onSession={onSession} />;
      break;
    default:
      body = (
        <section>
          <Heading>Not found</Heading>
          <p>
            <a href="#/">Back to the movies</a>
          </p>
        </section>
      );
  }
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => (e.preventDefault(), document.getElementById("main")?.focus())}>
        Skip to content
      </a>
      <header>
        <a class="brand" href="#/">
          MovieBook
        </a>
        <nav aria-label="Main">
          <a href="#/">Movies</a>
          <a href="#/bookings">My bookings</a>
          {session ? (
            <button type="button" class="link" onClick={() => (onSession(null), go(""))}>
              Log out {session.user.first_name}
            </button>
          ) : (
            <a href={`#/login/${(page === "login" ? rest : route).join("/")}`}>Log in</a>
          )}
        </nav>
      </header>
      <main id="main" tabIndex={-1}>
        {body}
      </main>
    </>
  );
}

const root = document.getElementById("app");
if (root) render(<App />, root);
