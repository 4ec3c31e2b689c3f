// HTTP calls the page makes before (and besides) the Socket.IO connection.

async function json(resp) {
  try {
    return await resp.json();
  } catch {
    return null;
  }
}

export async function getConfig() {
  const resp = await fetch("config", { headers: { Accept: "application/json" } });
  if (!resp.ok) throw new Error(`GET /config answered ${resp.status}`);
  return resp.json();
}

export async function getModels() {
  const resp = await fetch("models", { headers: { Accept: "application/json" } });
  if (!resp.ok) throw new Error(`GET /models answered ${resp.status}`);
  return resp.json();
}

/** POST /auth/token (OAuth2 password form) → the token response, or throws. */
export async function login(username, password) {
  const body = new URLSearchParams({ grant_type: "password", username, password });
  const resp = await fetch("auth/token", { method: "POST", body });
  if (resp.status === 401) throw new Error("Wrong user name or password.");
  if (!resp.ok) throw new Error(`Sign-in failed (HTTP ${resp.status}).`);
  return json(resp);
}

/** POST /auth/guest → a token for a fresh guest identity, or throws. */
export async function guest() {
  const resp = await fetch("auth/guest", { method: "POST" });
  if (resp.status === 404) throw new Error("Guest access is turned off on this server.");
  if (!resp.ok) throw new Error(`Guest sign-in failed (HTTP ${resp.status}).`);
  return json(resp);
}

/** The claims of a JWT (not verified: only to read `exp`, `sub` and `name` for the UI). */
export function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const text = atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="));
    const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}
