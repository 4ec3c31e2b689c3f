// What a person should read for each protocol error code (PROTOCOL.md §4).

const TEXT = {
  unauthorized: "You are not signed in, or your sign-in is no longer valid.",
  token_expired: "Your session has expired. Please sign in again.",
  forbidden: "That is not allowed.",
  invalid_payload: "The message could not be sent: the server found it invalid.",
  payload_too_large: "The message is too long for this server.",
  model_not_allowed: "This model is not allowed on this server. Pick another one.",
  rate_limited: "You are sending messages too quickly.",
  too_many_streams: "Too many answers are streaming at once. Wait for one to finish.",
  not_found: "Not found.",
  upstream_bad_request: "The model provider rejected the request.",
  upstream_auth: "The server's model provider key is missing or was refused.",
  insufficient_credits: "The model provider account has run out of credits.",
  moderation: "The model provider's moderation flagged the message.",
  upstream_timeout: "The model took too long to answer.",
  upstream_rate_limited: "The model provider is busy right now (rate limited).",
  upstream_unavailable: "The model provider is unavailable right now.",
  upstream_error: "The answer broke off before it was finished.",
  server_shutdown: "The server is restarting.",
  internal: "Something went wrong on the server.",
  offline: "Not connected to the server.",
  timeout: "The server did not answer in time.",
};

/** {title, detail, retryable, retryAfter} for an error object of the protocol. */
export function describeError(error) {
  const code = typeof error?.code === "string" ? error.code : "internal";
  const title = TEXT[code] ?? "Something went wrong.";
  let detail = typeof error?.message === "string" ? error.message.trim() : "";
  if (detail && normalise(detail) === normalise(title)) detail = "";
  const retryAfter = Number.isFinite(error?.retry_after) ? Math.max(0, error.retry_after) : null;
  const fields = Array.isArray(error?.details)
    ? error.details
        .filter((d) => d && typeof d.field === "string")
        .map((d) => `${d.field}: ${d.message}`)
    : [];
  return { code, title, detail, fields, retryable: Boolean(error?.retryable), retryAfter };
}

function normalise(text) {
  return text.toLowerCase().replace(/[.!]+$/, "");
}
