// Signing in and out, the connection status, banners and notices, session expiry.

import * as api from "./api.js";
import { describeError } from "./errors.js";
import { errorBox, h } from "./view.js";
import { AUTH_KEY, EXPIRY_WARNING_S, $, ui, state } from "./state.js";
import { resetConversations, updateComposer } from "./conversations.js";
import { start } from "./app.js";

export function loadAuth() {
  try {
    const auth = JSON.parse(sessionStorage.getItem(AUTH_KEY) || "null");
    if (auth?.token && (!auth.exp || auth.exp * 1000 > Date.now() + 5000)) return auth;
  } catch {
    /* a damaged entry: sign in again */
  }
  sessionStorage.removeItem(AUTH_KEY);
  return null;
}

export function authFrom(tokenResponse, kind, username) {
  const token = tokenResponse.access_token;
  const claims = api.claims(token);
  return { token, kind, username, exp: Number.isFinite(claims.exp) ? claims.exp : null };
}

export function setLoginError(text) {
  ui.loginError.textContent = text || "";
}

export function showLogin(message) {
  ui.chatView.hidden = true;
  ui.account.hidden = true;
  ui.menuToggle.hidden = true;
  ui.loginView.hidden = false;
  setLoginError(message);
  setStatus("offline");
  (ui.loginForm.hidden ? ui.guestButton : $("username")).focus();
}

export async function signIn(action, button) {
  button.disabled = true;
  setLoginError("");
  try {
    start(await action());
  } catch (err) {
    setLoginError(err.message || "Sign-in failed.");
  } finally {
    button.disabled = false;
  }
}

export function signOut(message) {
  clearTimeout(state.expiryTimer);
  state.client?.disconnect();
  state.client = null;
  state.session = null;
  state.auth = null;
  sessionStorage.removeItem(AUTH_KEY);
  resetConversations();
  hideBanner();
  showLogin(message);
}

export const STATUS_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  closed: "Disconnected",
  refused: "Not connected",
  offline: "Not connected",
};

export function setStatus(value) {
  ui.status.dataset.state = value;
  ui.status.textContent = STATUS_TEXT[value] ?? value;
  updateComposer();
  if (value === "closed" && state.auth) {
    showBanner("The server closed the connection.", [
      h("button", { class: "btn btn-small", type: "button", onclick: reconnect }, "Reconnect"),
    ]);
  } else if (value === "connected") {
    hideBanner();
    // Keyboard users land on the prompt once it can be used (also after a reconnect),
    // unless they already moved the focus somewhere.
    requestAnimationFrame(() => {
      const active = document.activeElement;
      if (!active || active === document.body) ui.prompt.focus();
    });
  }
}

export function reconnect() {
  hideBanner();
  state.client?.reconnect();
}

export function showNotice(error) {
  ui.notice.replaceChildren(errorBox(error, null));
  ui.notice.hidden = false;
}

export function hideNotice() {
  ui.notice.hidden = true;
  ui.notice.replaceChildren();
}

export function showBanner(text, actions = []) {
  ui.banner.replaceChildren(h("span", {}, text), ...actions);
  ui.banner.hidden = false;
}

export function hideBanner() {
  ui.banner.hidden = true;
  ui.banner.replaceChildren();
}

export async function onRefused({ code, message }) {
  if (code === "token_expired" || code === "unauthorized") {
    if (state.auth?.kind === "guest" && (await renewGuest())) return;
    signOut(describeError({ code, message }).title);
    return;
  }
  const info = describeError({ code, message });
  showBanner(`Could not connect: ${info.title}`, [
    h("button", { class: "btn btn-small", type: "button", onclick: reconnect }, "Try again"),
  ]);
}

export async function onConnectionProblem(error) {
  if (error.code === "token_expired") {
    if (state.auth?.kind === "guest" && (await renewGuest())) return;
    signOut(describeError(error).title);
    return;
  }
  showNotice(error);
}

/** A guest cannot keep its identity past its token; continue as a new guest. */
export async function renewGuest() {
  try {
    state.auth = authFrom(await api.guest(), "guest", "");
  } catch {
    return false;
  }
  sessionStorage.setItem(AUTH_KEY, JSON.stringify(state.auth));
  scheduleExpiryWarning();
  state.client?.reconnect();
  return true;
}

export function scheduleExpiryWarning() {
  clearTimeout(state.expiryTimer);
  const auth = state.auth;
  if (!auth?.exp || auth.kind !== "password") return;
  const lead = Math.min(EXPIRY_WARNING_S, (auth.exp * 1000 - Date.now()) / 2000);
  const at = auth.exp * 1000 - lead * 1000 - Date.now();
  state.expiryTimer = setTimeout(showRenewForm, Math.max(0, at));
}

/** Refresh before expiry: sign in again in place and hand the connection the new token. */
export function showRenewForm() {
  const password = h("input", {
    id: "renew-password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const form = h(
    "form",
    {
      class: "renew-form",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const auth = authFrom(
            await api.login(state.auth.username, password.value),
            "password",
            state.auth.username,
          );
          const ack = await state.client.refresh(auth.token);
          if (!ack?.ok) throw new Error(describeError(ack?.error).title);
          state.auth = auth;
          sessionStorage.setItem(AUTH_KEY, JSON.stringify(auth));
          hideBanner();
          scheduleExpiryWarning();
        } catch (err) {
          showBanner(`Could not renew the session: ${err.message}`, [form]);
        }
      },
    },
    h("label", { for: "renew-password" }, "Password"),
    password,
    h("button", { class: "btn btn-small btn-primary", type: "submit" }, "Stay signed in"),
  );
  showBanner("Your session ends soon. Enter your password to stay signed in.", [form]);
}
