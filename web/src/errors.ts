// The API's error codes (docs/booking.md, docs/user.md, docs/payment.md) in words a customer
// understands. Pure: tested by test/unit/errors.test.mjs against the built module.

export interface CodedError {
  code: string;
  message: string;
  extensions?: Record<string, unknown>;
}

const DECLINES: Record<string, string> = {
  CARD_DECLINED: "Your card was declined. Try another card.",
  INSUFFICIENT_FUNDS: "The card has insufficient funds. Try another card.",
  EXPIRED_CARD: "The card has expired. Try another card.",
  PROCESSING_ERROR: "The card could not be processed. Please try again.",
};

export function describe(e: CodedError): string {
  const ext = e.extensions ?? {};
  switch (e.code) {
    case "NETWORK":
      return "We could not reach MovieBook. Check your connection and try again.";
    case "RATE_LIMITED":
      return "Too many requests from this address. Wait a minute and try again.";
    case "UNAUTHENTICATED":
    case "TOKEN_EXPIRED":
      return ext.reason === "TOKEN_EXPIRED" || e.code === "TOKEN_EXPIRED"
        ? "Your session has expired. Please log in again."
        : "Please log in to continue.";
    case "FORBIDDEN":
      return "That belongs to another account.";
    case "NOT_FOUND":
    case "USER_NOT_FOUND":
      return "We could not find that. It may have been removed.";
    case "SEATS_UNAVAILABLE": {
      const seats = Array.isArray(ext.unavailableSeats) ? (ext.unavailableSeats as string[]) : [];
      return seats.length
        ? `Sorry, ${seats.join(", ")} ${seats.length === 1 ? "was" : "were"} just taken. Please pick other seats.`
        : "Sorry, some of those seats were just taken. Please pick other seats.";
    }
    case "PAYMENT_DECLINED":
      return DECLINES[String(ext.reason)] ?? "The payment was declined. Try another card.";
    case "HOLD_EXPIRED":
      return "Your hold on these seats ran out before the payment went through. Nothing was charged (any charge is refunded). Please pick your seats again.";
    case "INVALID_STATE":
      return ext.status === "PAYING"
        ? "A payment for this booking is already in progress."
        : `This booking can no longer be changed (it is ${String(ext.status ?? "closed").toLowerCase().replace(/_/g, " ")}).`;
    case "SERVICE_UNAVAILABLE":
    case "STORE_UNAVAILABLE":
      return "Part of MovieBook is not answering right now. Please try again in a moment.";
    case "BAD_USER_INPUT":
      return `Please check your input: ${e.message}.`;
    case "INVALID_CREDENTIALS":
      return "That email and password do not match an account.";
    case "EMAIL_TAKEN":
      return "An account with that email already exists. Log in instead.";
    case "INVALID_EMAIL":
      return "Please enter a valid email address.";
    case "WEAK_PASSWORD":
      return `Please choose a stronger password: ${e.message}.`;
    case "INVALID_NAME":
      return `Please check your name: ${e.message}.`;
    default:
      return `Something went wrong on our side (${e.code}). Please try again.`;
  }
}
