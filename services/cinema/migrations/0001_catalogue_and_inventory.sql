-- The cinema catalogue (cinemas, screens, movies, showtimes) and the seat inventory.
--
-- Money is stored in integer cents. A seat row per showtime is the unit of locking: every
-- state change of a seat is a conditional UPDATE of its row, so PostgreSQL's row locks make a
-- double hold or double sale impossible. `available_seats` is never stored: it is derived from
-- the seat rows (an expired hold counts as free), so it cannot drift.

CREATE TABLE cinemas (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    location    TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT cinemas_name_unique UNIQUE (name)
);

-- `layout` is the seat plan: {"rows": [{"label": "A", "seats": 12, "seat_type": "standard"}, ...]}.
CREATE TABLE screens (
    id           UUID PRIMARY KEY,
    cinema_id    UUID NOT NULL REFERENCES cinemas (id) ON DELETE RESTRICT,
    name         TEXT NOT NULL,
    layout       JSONB NOT NULL,
    total_seats  INTEGER NOT NULL CHECK (total_seats > 0),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT screens_cinema_name_unique UNIQUE (cinema_id, name)
);

CREATE TABLE movies (
    id                UUID PRIMARY KEY,
    title             TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    genre             TEXT NOT NULL,
    duration_minutes  INTEGER NOT NULL CHECK (duration_minutes > 0),
    rating            TEXT NOT NULL DEFAULT '',
    poster_url        TEXT NOT NULL DEFAULT '',
    release_date      DATE,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT movies_title_unique UNIQUE (title)
);
CREATE INDEX movies_genre_idx ON movies (lower(genre));

-- `cinema_id` is denormalised from the screen so catalogue filters need no join.
CREATE TABLE showtimes (
    id                UUID PRIMARY KEY,
    movie_id          UUID NOT NULL REFERENCES movies (id) ON DELETE RESTRICT,
    screen_id         UUID NOT NULL REFERENCES screens (id) ON DELETE RESTRICT,
    cinema_id         UUID NOT NULL REFERENCES cinemas (id) ON DELETE RESTRICT,
    start_time        TIMESTAMPTZ NOT NULL,
    end_time          TIMESTAMPTZ NOT NULL,
    base_price_cents  BIGINT NOT NULL CHECK (base_price_cents >= 0),
    total_seats       INTEGER NOT NULL CHECK (total_seats > 0),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (end_time > start_time),
    CONSTRAINT showtimes_screen_start_unique UNIQUE (screen_id, start_time)
);
CREATE INDEX showtimes_start_idx ON showtimes (start_time);
CREATE INDEX showtimes_movie_start_idx ON showtimes (movie_id, start_time);
CREATE INDEX showtimes_cinema_start_idx ON showtimes (cinema_id, start_time);

-- One hold per booking id (the idempotency key of LockSeats).
-- status: HELD -> CONFIRMED | RELEASED | EXPIRED; CONFIRMED -> CANCELLED (seats back to sale).
CREATE TABLE seat_locks (
    id            UUID PRIMARY KEY,
    booking_id    TEXT NOT NULL,
    -- No foreign key: every LockSeats would take a KEY SHARE lock on the showtime row, and
    -- hundreds of concurrent holds on one showtime would contend on it. Deleting a showtime
    -- deletes its holds explicitly.
    showtime_id   UUID NOT NULL,
    seat_numbers  TEXT[] NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('HELD', 'CONFIRMED', 'RELEASED', 'EXPIRED', 'CANCELLED')),
    expires_at    TIMESTAMPTZ NOT NULL,
    user_id       TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT seat_locks_booking_unique UNIQUE (booking_id)
);
-- The sweeper's scan: live holds by expiry.
CREATE INDEX seat_locks_held_expiry_idx ON seat_locks (expires_at) WHERE status = 'HELD';

-- The inventory: one row per seat per showtime.
CREATE TABLE seats (
    showtime_id   UUID NOT NULL REFERENCES showtimes (id) ON DELETE CASCADE,
    seat_number   TEXT NOT NULL,
    row_label     TEXT NOT NULL,
    seat_col      INTEGER NOT NULL,
    seat_type     TEXT NOT NULL CHECK (seat_type IN ('standard', 'premium', 'vip')),
    price_cents   BIGINT NOT NULL CHECK (price_cents >= 0),
    status        TEXT NOT NULL DEFAULT 'AVAILABLE'
                  CHECK (status IN ('AVAILABLE', 'LOCKED', 'BOOKED', 'MAINTENANCE')),
    lock_id       UUID,
    booking_id    TEXT,
    locked_until  TIMESTAMPTZ,
    booked_by     TEXT,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (showtime_id, seat_number),
    -- a LOCKED or BOOKED seat always names its hold; an AVAILABLE one never does
    CHECK ((status IN ('LOCKED', 'BOOKED')) = (lock_id IS NOT NULL)),
    CHECK (status <> 'LOCKED' OR locked_until IS NOT NULL)
);
CREATE INDEX seats_lock_idx ON seats (lock_id) WHERE lock_id IS NOT NULL;
