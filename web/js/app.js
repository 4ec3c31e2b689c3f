// The chat page: sign-in, conversations (private chat and rooms), streaming answers.

import * as api from "./api.js";
import { describeError } from "./errors.js";
import { io } from "../vendor/socket.io.esm.min.js";
import { RelayClient, newRequestId } from "./relay.js";
import {
  AnswerView,
  Conversation,
  avatar,
  errorBox,
  h,
  notice,
  userMessage,
} from "./view.js";

const AUTH_KEY = "llm-relay.auth";
const MODEL_KEY = "llm-relay.model";
const PRIVATE = "private";
const ROOM_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;
const EXPIRY_WARNING_S = 120;

const $ = (id) => document.getElementById(id);

const ui = {
  loginView: $("login-view"),
  chatView: $("chat-view"),
  loginForm: $("login-form"),
  loginError: $("login-error"),
  guestButton: $("guest-btn"),
  orDivider: $("or-divider"),
  tokenForm: $("token-form"),
  demoNote: $("demo-note"),
  account: $("account"),
  userName: $("user-name"),
  logout: $("logout"),
  status: $("conn-status"),
  banner: $("session-banner"),
  menuToggle: $("menu-toggle"),
  sidebar: $("sidebar"),
  convList: $("conv-list"),
  joinForm: $("join-form"),
  roomName: $("room-name"),
  joinError: $("join-error"),
  membersPanel: $("members-panel"),
  memberList: $("member-list"),
  memberCount: $("member-count"),
  chatTitle: $("chat-title"),
  model: $("model"),
  leave: $("leave-btn"),
  messages: $("messages"),
  notice: $("notice"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send-btn"),
  stop: $("stop-btn"),
};

const state = {
  config: null,
  auth: null, // {token, kind: "password"|"guest"|"token", username, exp}
  client: null,
  session: null,
  convs: new Map(),
  active: PRIVATE,
  answers: new Map(), // request_id -> {view, conv, stream, retry}
  expiryTimer: null,
  renderQueued: false,
};

// -- sign-in --------------------------------------------------------------------------

function loadAuth() {
  try {
    const auth = JSON.parse(sessionStorage.getItem(AUTH_KEY) || "null");
    if (auth?.token && (!auth.exp || auth.exp * 1000 > Date.now() + 5000)) return auth;
  } catch {
    /* a damaged entry: sign in again */
  }
  sessionStorage.removeItem(AUTH_KEY);
  return null;
}

function authFrom(tokenResponse, kind, username) {
  const token = tokenResponse.access_token;
  const claims = api.claims(token);
  return { token, kind, username, exp: Number.isFinite(claims.exp) ? claims.exp : null };
}

function setLoginError(text) {
  ui.loginError.textContent = text || "";
}

async function boot() {
  wireStaticUi();
  try {
    state.config = await api.getConfig();
  } catch {
    state.config = { allow_anonymous: false, password_login: true, demo: false };
  }
  const cfg = state.config;
  ui.loginForm.hidden = !cfg.password_login;
  ui.guestButton.hidden = !cfg.allow_anonymous;
  ui.orDivider.hidden = !(cfg.password_login && cfg.allow_anonymous);
  ui.demoNote.hidden = !cfg.demo;
  if (!cfg.password_login && !cfg.allow_anonymous) $("token-login").open = true;
  const saved = loadAuth();
  if (saved) start(saved);
  else showLogin();
}

function showLogin(message) {
  ui.chatView.hidden = true;
  ui.account.hidden = true;
  ui.menuToggle.hidden = true;
  ui.loginView.hidden = false;
  setLoginError(message);
  setStatus("offline");
  (ui.loginForm.hidden ? ui.guestButton : $("username")).focus();
}

async function signIn(action, button) {
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

function signOut(message) {
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

// -- start-up -------------------------------------------------------------------------

function start(auth) {
  state.auth = auth;
  sessionStorage.setItem(AUTH_KEY, JSON.stringify(auth));
  ui.loginView.hidden = true;
  ui.chatView.hidden = false;
  ui.account.hidden = false;
  ui.menuToggle.hidden = false;
  ui.userName.textContent = auth.username || "";
  resetConversations();
  loadModels();
  scheduleExpiryWarning();
  state.client = new RelayClient({
    io,
    getToken: () => state.auth?.token ?? null,
    path: new URL("socket.io", location.href).pathname,
    handlers: {
      onStatus: setStatus,
      onSession: (s) => {
        state.session = s;
        ui.userName.textContent = s.user?.name ?? "";
        const maxChars = s.limits?.max_message_chars;
        if (Number.isInteger(maxChars) && maxChars > 0) ui.prompt.maxLength = maxChars;
        if (!ui.model.options.length) fillModels({ default_model: s.default_model, models: [] });
      },
      onText: (stream) => {
        answerFor(stream)?.view.setText(stream.text);
        queueRender();
      },
      onStreamStart: (stream) => answerFor(stream),
      onEnd: onStreamEnd,
      onMessage: onRoomMessage,
      onPresence: (p) => {
        const conv = state.convs.get(roomKey(p?.room));
        if (conv && Array.isArray(p.members)) setMembers(conv, p.members);
      },
      onRejoin: (room, ack) => {
        const conv = state.convs.get(roomKey(room));
        if (!conv) return;
        if (ack?.ok) applyJoin(conv, ack);
        else conv.append(notice(`Could not rejoin: ${describeError(ack?.error).title}`, "error"));
      },
      onRefused: onRefused,
      onProblem: onConnectionProblem,
    },
  });
  state.client.connect();
  ui.prompt.focus();
}

function resetConversations() {
  state.convs.clear();
  state.answers.clear();
  ui.convList.replaceChildren();
  ui.messages.replaceChildren();
  addConversation(new Conversation(PRIVATE, "Private chat", null));
  activate(PRIVATE);
}

// -- models ---------------------------------------------------------------------------

async function loadModels() {
  try {
    fillModels(await api.getModels());
  } catch {
    /* the session's default model is used (filled in onSession) */
  }
}

function fillModels(list) {
  const ids = new Set();
  const options = [];
  for (const m of list.models ?? []) {
    if (!m || typeof m.id !== "string" || ids.has(m.id)) continue;
    ids.add(m.id);
    const label = m.name && m.name !== m.id ? `${m.name} (${m.id})` : m.id;
    options.push(h("option", { value: m.id }, label));
  }
  if (list.default_model && !ids.has(list.default_model)) {
    ids.add(list.default_model);
    options.unshift(h("option", { value: list.default_model }, list.default_model));
  }
  ui.model.replaceChildren(...options);
  const saved = localStorage.getItem(MODEL_KEY);
  ui.model.value = saved && ids.has(saved) ? saved : list.default_model;
}

// -- conversations --------------------------------------------------------------------

function roomKey(room) {
  return `room:${room}`;
}

function addConversation(conv) {
  state.convs.set(conv.key, conv);
  const badge = h("span", { class: "unread", hidden: true });
  const button = h(
    "button",
    { type: "button", class: "conv-btn", onclick: () => activate(conv.key) },
    h("span", { class: "conv-icon", "aria-hidden": "true" }, conv.room ? "#" : "✦"),
    h("span", { class: "conv-name" }, conv.title),
    badge,
  );
  conv.navItem = h("li", { dataset: { conv: conv.key } }, button);
  conv.navButton = button;
  conv.badge = badge;
  ui.convList.append(conv.navItem);
  conv.list.hidden = true;
  ui.messages.append(conv.list);
}

function removeConversation(conv) {
  state.convs.delete(conv.key);
  conv.navItem.remove();
  conv.list.remove();
  if (state.active === conv.key) activate(PRIVATE);
}

function activeConv() {
  return state.convs.get(state.active);
}

function activate(key) {
  const conv = state.convs.get(key);
  if (!conv) return;
  state.active = key;
  for (const other of state.convs.values()) {
    const on = other === conv;
    other.list.hidden = !on;
    if (on) other.navButton.setAttribute("aria-current", "page");
    else other.navButton.removeAttribute("aria-current");
  }
  conv.unread = 0;
  conv.badge.hidden = true;
  ui.chatTitle.textContent = conv.room ? `# ${conv.room}` : conv.title;
  ui.leave.hidden = !conv.room;
  ui.membersPanel.hidden = !conv.room;
  renderMembers(conv);
  hideNotice();
  updateComposer();
  closeSidebar();
  scrollToEnd(true);
}

function markUnread(conv) {
  if (conv.key === state.active) return;
  conv.unread += 1;
  conv.badge.hidden = false;
  conv.badge.textContent = String(conv.unread);
  conv.badge.setAttribute("aria-label", `${conv.unread} new`);
}

function setMembers(conv, members) {
  conv.members = members.filter((m) => m && typeof m.id === "string");
  if (conv.key === state.active) renderMembers(conv);
}

function renderMembers(conv) {
  const me = state.session?.user?.id;
  ui.memberCount.textContent = conv.room ? `(${conv.members.length})` : "";
  ui.memberList.replaceChildren(
    ...conv.members.map((m) =>
      h(
        "li",
        { class: "member", dataset: { userId: m.id } },
        avatar(m.name, m.id),
        h("span", { class: "member-name" }, String(m.name ?? m.id)),
        m.id === me ? h("span", { class: "muted" }, " (you)") : null,
      ),
    ),
  );
}

async function joinRoom(room) {
  ui.joinError.textContent = "";
  if (!ROOM_NAME.test(room)) {
    ui.joinError.textContent = "Use 1–64 letters, digits or _ . : -";
    return;
  }
  const existing = state.convs.get(roomKey(room));
  if (existing) {
    activate(existing.key);
    return;
  }
  if (!state.client?.connected) {
    ui.joinError.textContent = "Not connected yet.";
    return;
  }
  const ack = await state.client.join(room);
  if (!ack?.ok) {
    const info = describeError(ack?.error);
    ui.joinError.textContent = info.detail ? `${info.title} ${info.detail}` : info.title;
    return;
  }
  const conv = new Conversation(roomKey(room), room, room);
  addConversation(conv);
  applyJoin(conv, ack);
  ui.roomName.value = "";
  activate(conv.key);
  ui.prompt.focus();
}

function applyJoin(conv, ack) {
  if (Array.isArray(ack.members)) setMembers(conv, ack.members);
  for (const message of Array.isArray(ack.history) ? ack.history : []) {
    showRoomMessage(conv, message, false);
  }
  scrollToEnd(true);
}

async function leaveRoom(conv) {
  if (!conv?.room) return;
  for (const entry of state.answers.values()) {
    if (entry.conv === conv && entry.stream?.mine && !entry.stream.finished) {
      state.client.cancel(entry.stream.requestId);
    }
  }
  removeConversation(conv);
  await state.client?.leave(conv.room);
}

function onRoomMessage(message) {
  const conv = state.convs.get(roomKey(message?.room));
  if (!conv) return;
  showRoomMessage(conv, message, true);
}

function showRoomMessage(conv, message, live) {
  if (!message || typeof message.id !== "string" || conv.seenIds.has(message.id)) return;
  conv.seenIds.add(message.id);
  const user = message.user ?? {};
  if (message.role === "assistant") {
    const text = typeof message.content === "string" ? message.content : "";
    if (conv.streamedTexts.has(text)) return; // shown live already
    const view = new AnswerView({ requestId: message.id, label: "Assistant", ts: message.ts });
    view.setText(text);
    view.finish("done", {});
    conv.append(view.node);
  } else {
    const mine = user.id === state.session?.user?.id;
    conv.append(
      userMessage({
        name: String(user.name ?? user.id ?? "?"),
        id: user.id,
        content: message.content,
        ts: message.ts,
        mine,
      }),
    );
  }
  if (live) {
    markUnread(conv);
    scrollToEnd();
  }
}

// -- sending and streaming ------------------------------------------------------------

function answerFor(stream) {
  let entry = state.answers.get(stream.requestId);
  if (entry) {
    entry.stream = stream;
    return entry;
  }
  const conv = stream.room ? state.convs.get(roomKey(stream.room)) : state.convs.get(PRIVATE);
  if (!conv) return null;
  entry = newAnswer(conv, stream.requestId, stream.mine, stream);
  markUnread(conv);
  return entry;
}

function newAnswer(conv, requestId, mine, stream = null) {
  const entry = { conv, stream, retry: null };
  entry.view = new AnswerView({
    requestId,
    label: modelLabel(),
    mine,
    onStop: () => state.client?.cancel(requestId),
    onRetry: mine ? () => entry.retry?.() : null,
  });
  state.answers.set(requestId, entry);
  conv.append(entry.view.node);
  scrollToEnd(true);
  return entry;
}

function modelLabel() {
  return ui.model.value || state.session?.default_model || "Assistant";
}

async function send(text, { retryOf = null } = {}) {
  const conv = activeConv();
  if (!conv || !text.trim()) return;
  if (!state.client?.connected) {
    showNotice({ code: "offline", retryable: true, message: "" });
    return;
  }
  hideNotice();
  const model = ui.model.value || undefined;
  const requestId = newRequestId();
  const payload = { request_id: requestId, model };
  let entry = null;
  if (conv.room) {
    payload.room = conv.room;
    payload.messages = [{ role: "user", content: text }];
  } else {
    if (!retryOf) {
      const name = state.session?.user?.name ?? "You";
      conv.append(userMessage({ name, id: state.session?.user?.id, content: text, mine: true }));
      conv.context.push({ role: "user", content: text });
    }
    payload.messages = trimContext(conv.context);
    entry = newAnswer(conv, requestId, true);
  }
  const { stream, ack } = state.client.chat(payload);
  if (entry) entry.stream = stream;
  updateComposer(true);
  const reply = await ack;
  if (conv.room && reply?.ok) answerFor(stream); // the shared answer's place, once accepted
  const current = state.answers.get(requestId);
  if (current) current.retry = () => retry(conv, current, text);
  updateComposer();
}

function retry(conv, entry, text) {
  entry.view.node.remove();
  state.answers.delete(entry.view.requestId);
  if (conv.room) {
    send(text);
  } else {
    send(text, { retryOf: entry });
  }
}

function trimContext(context) {
  const limit = state.session?.limits?.max_messages ?? 500;
  return context.slice(-limit);
}

function onStreamEnd(stream, event, payload) {
  const entry = answerFor(stream);
  if (!entry) return;
  entry.view.setText(stream.text);
  entry.view.finish(event, payload);
  const conv = entry.conv;
  if (event === "done") {
    if (conv.room) conv.streamedTexts.add(stream.text);
    else if (stream.text) conv.context.push({ role: "assistant", content: stream.text });
  }
  if (conv.room && !stream.mine) markUnread(conv);
  scrollToEnd();
  updateComposer();
}

function ownStreaming(conv) {
  return [...state.answers.values()].filter(
    (e) => e.conv === conv && e.stream?.mine && !e.stream.finished,
  );
}

function stopActive() {
  for (const entry of ownStreaming(activeConv())) {
    state.client?.cancel(entry.stream.requestId);
  }
}

function updateComposer(sending = false) {
  const streaming = ownStreaming(activeConv()).length > 0;
  ui.stop.hidden = !streaming;
  ui.send.hidden = streaming;
  ui.send.disabled = sending || !state.client?.connected;
}

// -- rendering ------------------------------------------------------------------------

function queueRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  const flush = () => {
    if (!state.renderQueued) return;
    state.renderQueued = false;
    const pinned = nearBottom();
    for (const entry of state.answers.values()) entry.view.render();
    if (pinned) scrollToEnd(true);
  };
  requestAnimationFrame(flush);
  setTimeout(flush, 100); // hidden tabs get no animation frames
}

function nearBottom() {
  const box = ui.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function scrollToEnd(force = false) {
  if (force || nearBottom()) ui.messages.scrollTop = ui.messages.scrollHeight;
}

// -- status, notices, session expiry --------------------------------------------------

const STATUS_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  closed: "Disconnected",
  refused: "Not connected",
  offline: "Not connected",
};

function setStatus(value) {
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

function reconnect() {
  hideBanner();
  state.client?.reconnect();
}

function showNotice(error) {
  ui.notice.replaceChildren(errorBox(error, null));
  ui.notice.hidden = false;
}

function hideNotice() {
  ui.notice.hidden = true;
  ui.notice.replaceChildren();
}

function showBanner(text, actions = []) {
  ui.banner.replaceChildren(h("span", {}, text), ...actions);
  ui.banner.hidden = false;
}

function hideBanner() {
  ui.banner.hidden = true;
  ui.banner.replaceChildren();
}

async function onRefused({ code, message }) {
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

async function onConnectionProblem(error) {
  if (error.code === "token_expired") {
    if (state.auth?.kind === "guest" && (await renewGuest())) return;
    signOut(describeError(error).title);
    return;
  }
  showNotice(error);
}

/** A guest cannot keep its identity past its token; continue as a new guest. */
async function renewGuest() {
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

function scheduleExpiryWarning() {
  clearTimeout(state.expiryTimer);
  const auth = state.auth;
  if (!auth?.exp || auth.kind !== "password") return;
  const lead = Math.min(EXPIRY_WARNING_S, (auth.exp * 1000 - Date.now()) / 2000);
  const at = auth.exp * 1000 - lead * 1000 - Date.now();
  state.expiryTimer = setTimeout(showRenewForm, Math.max(0, at));
}

/** Refresh before expiry: sign in again in place and hand the connection the new token. */
function showRenewForm() {
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

// -- static wiring --------------------------------------------------------------------

function openSidebar(open) {
  ui.sidebar.classList.toggle("open", open);
  ui.menuToggle.setAttribute("aria-expanded", String(open));
}

function closeSidebar() {
  if (ui.sidebar.classList.contains("open")) openSidebar(false);
}

function wireStaticUi() {
  ui.loginForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const username = $("username").value.trim();
    const password = $("password").value;
    signIn(
      async () => authFrom(await api.login(username, password), "password", username),
      ui.loginForm.querySelector("button"),
    ).then(() => {
      $("password").value = "";
    });
  });
  ui.guestButton.addEventListener("click", () =>
    signIn(async () => authFrom(await api.guest(), "guest", ""), ui.guestButton),
  );
  ui.tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("access-token").value.trim();
    signIn(async () => {
      const auth = authFrom({ access_token: token }, "token", "");
      if (auth.exp && auth.exp * 1000 < Date.now()) throw new Error("This token has expired.");
      return auth;
    }, ui.tokenForm.querySelector("button"));
  });
  ui.logout.addEventListener("click", () => signOut(""));
  ui.menuToggle.addEventListener("click", () =>
    openSidebar(!ui.sidebar.classList.contains("open")),
  );
  ui.joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    joinRoom(ui.roomName.value.trim());
  });
  ui.leave.addEventListener("click", () => leaveRoom(activeConv()));
  ui.model.addEventListener("change", () => localStorage.setItem(MODEL_KEY, ui.model.value));
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!ui.send.hidden && !ui.send.disabled) submitPrompt();
  });
  ui.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!ui.send.hidden && !ui.send.disabled) submitPrompt();
    } else if (event.key === "Escape") {
      stopActive();
    }
  });
  ui.prompt.addEventListener("input", autoGrow);
  ui.stop.addEventListener("click", () => {
    stopActive();
    ui.prompt.focus();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeSidebar();
  });
  document.querySelector(".chat").addEventListener("pointerdown", closeSidebar);
}

function submitPrompt() {
  const text = ui.prompt.value;
  if (!text.trim()) return;
  ui.prompt.value = "";
  autoGrow();
  send(text);
}

function autoGrow() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 200)}px`;
}

boot();
