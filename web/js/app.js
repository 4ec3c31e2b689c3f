// The chat page: sign-in, conversations (private chat and rooms), streaming answers.

import * as api from "./api.js";
import { describeError } from "./errors.js";
import { io } from "../vendor/socket.io.esm.min.js";
import { RelayClient, Stream, newRequestId } from "./relay.js";
import { ChatStore, newId, titleOf } from "./store.js";
import {
  AnswerView,
  Conversation,
  avatar,
  errorBox,
  h,
  markRefused,
  notice,
  userMessage,
} from "./view.js";

const AUTH_KEY = "llm-relay.auth";
const MODEL_KEY = "llm-relay.model";
// A request the server refused, or one the model provider refused for what it says: the
// message is marked refused and never sent again (a retryable refusal offers Retry).
const REQUEST_FAULTS = new Set([
  "invalid_payload",
  "payload_too_large",
  "model_not_allowed",
  "forbidden",
  "upstream_bad_request",
  "moderation",
]);
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
  roomList: $("room-list"),
  newChat: $("new-chat"),
  clearChats: $("clear-chats"),
  clearConfirm: $("clear-confirm"),
  clearYes: $("clear-yes"),
  clearNo: $("clear-no"),
  composerError: $("composer-error"),
  charCount: $("char-count"),
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
  active: null,
  store: null, // ChatStore of the signed-in user
  editing: null, // {conv, msgId} while a message is being edited
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
  const userId = api.claims(auth.token).sub;
  state.store = new ChatStore(typeof userId === "string" ? userId : "anonymous");
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
        updateCount();
        if (!ui.model.options.length) fillModels({ default_model: s.default_model, models: [] });
      },
      onText: (stream) => {
        answerFor(stream)?.view.setText(stream.text);
        queueRender();
      },
      onReasoning: (stream) => {
        answerFor(stream)?.view.setReasoning(stream.reasoning);
        queueRender();
      },
      onToolCall: (stream) => {
        answerFor(stream)?.view.setToolCalls(stream.toolCalls);
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
        const conv = state.convs.get(roomKey(room)) ?? addRoom(room);
        if (ack?.ok) {
          applyJoin(conv, ack);
          return;
        }
        conv.append(notice(`Could not rejoin: ${describeError(ack?.error).title}`, "error"));
        saveRooms();
      },
      onRefused: onRefused,
      onProblem: onConnectionProblem,
    },
  });
  resetConversations();
  restore();
  state.client.connect();
  ui.prompt.focus();
}

function resetConversations() {
  state.convs.clear();
  state.answers.clear();
  state.editing = null;
  ui.convList.replaceChildren();
  ui.roomList.replaceChildren();
  ui.messages.replaceChildren();
  state.active = null;
}

/** After sign-in or a reload: the saved chats, the rooms to rejoin, answers to resume. */
function restore() {
  const chats = state.store.chats();
  for (const chat of [...chats].reverse()) addChat(chat);
  for (const room of state.store.rooms()) {
    addRoom(room);
    state.client.rooms.add(room); // joined again on connect (RelayClient)
  }
  for (const chat of chats) {
    if (!chat.pending?.requestId) continue;
    const conv = state.convs.get(chatKey(chat.id));
    const stream = new Stream(chat.pending.requestId, null, true);
    newAnswer(conv, stream.requestId, true, stream, chat.pending.model);
    state.client.adopt(stream); // resumed from the start once connected
  }
  const newest = chats[0];
  activate(newest ? chatKey(newest.id) : newChat().key);
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

function chatKey(id) {
  return `chat:${id}`;
}

function addConversation(conv, list, icon) {
  state.convs.set(conv.key, conv);
  const badge = h("span", { class: "unread", hidden: true });
  conv.label = h("span", { class: "conv-name" }, conv.title);
  const button = h(
    "button",
    { type: "button", class: "conv-btn", onclick: () => activate(conv.key) },
    h("span", { class: "conv-icon", "aria-hidden": "true" }, icon),
    conv.label,
    badge,
  );
  conv.navItem = h("li", { dataset: { conv: conv.key } }, button);
  conv.navButton = button;
  conv.badge = badge;
  if (conv.room) list.append(conv.navItem);
  else list.prepend(conv.navItem); // newest chat first
  conv.list.hidden = true;
  ui.messages.append(conv.list);
  return conv;
}

/** A private chat: its messages are kept in the browser and sent whole each time. */
function addChat(chat) {
  const conv = new Conversation(chatKey(chat.id), titleOf(chat), null);
  conv.chat = chat;
  addConversation(conv, ui.convList, "✦");
  conv.navItem.hidden = !chat.messages.length && !chat.pending;
  for (const message of chat.messages) showStored(conv, message);
  updateLatest(conv);
  return conv;
}

function newChat() {
  const current = activeConv();
  if (current?.chat && !current.chat.messages.length && !current.chat.pending) return current;
  return addChat({ id: newId(), title: "New chat", updated: Date.now(), messages: [] });
}

function addRoom(room) {
  return addConversation(new Conversation(roomKey(room), room, room), ui.roomList, "#");
}

function saveChat(conv) {
  if (!conv.chat) return;
  state.store?.save(conv.chat);
  conv.title = titleOf(conv.chat);
  conv.label.textContent = conv.title;
  conv.navItem.hidden = false;
  if (conv.key === state.active) ui.chatTitle.textContent = conv.title;
}

function saveRooms() {
  state.store?.saveRooms([...state.convs.values()].filter((c) => c.room).map((c) => c.room));
}

function clearSavedChats() {
  state.store?.clear();
  for (const conv of [...state.convs.values()]) {
    if (!conv.chat) continue;
    for (const entry of ownStreaming(conv)) state.client?.cancel(entry.stream.requestId);
    removeConversation(conv);
  }
  saveRooms(); // the rooms still joined stay remembered
  activate(newChat().key);
}

function removeConversation(conv) {
  state.convs.delete(conv.key);
  conv.navItem.remove();
  conv.list.remove();
  if (state.active === conv.key) {
    const next = [...state.convs.values()].find((c) => c.chat);
    activate((next ?? newChat()).key);
  }
}

function activeConv() {
  return state.convs.get(state.active);
}

function activate(key) {
  const conv = state.convs.get(key);
  if (!conv) return;
  if (state.editing && state.editing.conv !== conv) cancelEdit();
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
  const conv = state.convs.get(roomKey(room)) ?? addRoom(room);
  applyJoin(conv, ack);
  saveRooms();
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
  saveRooms();
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
    if (state.answers.has(message.id)) return;
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

// -- private chats: stored messages, edit, regenerate ---------------------------------

function myName() {
  return state.session?.user?.name ?? state.auth?.username ?? "You";
}

/** Render one stored message of a private chat. */
function showStored(conv, message) {
  if (message.role === "user") {
    const node = userMessage({
      name: myName(),
      content: message.content,
      mine: true,
      msgId: message.id,
      onEdit: () => startEdit(conv, message.id),
    });
    if (message.refused) markRefused(node, message.refused);
    conv.append(node);
    return;
  }
  const view = new AnswerView({
    requestId: message.id,
    label: message.model ?? "Assistant",
    mine: true,
    onRegenerate: () => regenerate(conv),
  });
  view.node.dataset.msgId = message.id;
  view.setText(message.content);
  if (message.reasoning) view.setReasoning(message.reasoning);
  if (message.toolCalls?.length) view.setToolCalls(message.toolCalls);
  view.finish("done", { finish_reason: message.finish ?? "stop", model: message.model });
  conv.views.set(message.id, view);
  conv.append(view.node);
}

/** Only the newest answer of a private chat offers Regenerate. */
function updateLatest(conv) {
  const nodes = [...conv.list.querySelectorAll("li.msg-assistant")];
  const last = nodes.at(-1);
  for (const view of [...conv.views.values(), ...answerViews(conv)]) {
    view.setLatest(view.node === last);
  }
}

function answerViews(conv) {
  return [...state.answers.values()].filter((e) => e.conv === conv).map((e) => e.view);
}

/** Remove `node` and every message after it from a conversation's list. */
function removeFrom(conv, node) {
  let current = node;
  while (current) {
    const next = current.nextElementSibling;
    const requestId = current.dataset?.requestId;
    if (requestId) {
      const entry = state.answers.get(requestId);
      if (entry?.stream && !entry.stream.finished) state.client?.cancel(requestId);
      state.answers.delete(requestId);
      conv.views.delete(requestId);
    }
    current.remove();
    current = next;
  }
}

function regenerate(conv) {
  const chat = conv.chat;
  if (!chat || ownStreaming(conv).length) return;
  const lastUser = chat.messages.findLastIndex((m) => m.role === "user" && !m.refused);
  if (lastUser < 0) return;
  const userNode = conv.list.querySelector(`[data-msg-id="${chat.messages[lastUser].id}"]`);
  chat.messages.splice(lastUser + 1);
  if (userNode?.nextElementSibling) removeFrom(conv, userNode.nextElementSibling);
  saveChat(conv);
  sendPrivate(conv, chat.messages[lastUser]);
}

function startEdit(conv, msgId) {
  const message = conv.chat?.messages.find((m) => m.id === msgId);
  if (!message) return;
  state.editing = { conv, msgId };
  ui.composer.classList.add("editing");
  ui.prompt.value = message.content;
  ui.composerError.textContent = "";
  ui.send.textContent = "Save & send";
  updateCount();
  autoGrow();
  ui.prompt.focus();
}

function cancelEdit() {
  if (!state.editing) return;
  state.editing = null;
  ui.composer.classList.remove("editing");
  ui.send.textContent = "Send";
  ui.prompt.value = "";
  updateCount();
  autoGrow();
}

// -- sending and streaming ------------------------------------------------------------

function answerFor(stream) {
  let entry = state.answers.get(stream.requestId);
  if (entry) {
    entry.stream = stream;
    return entry;
  }
  if (!stream.room) return null; // private answers are created when sent or restored
  const conv = state.convs.get(roomKey(stream.room));
  if (!conv) return null;
  entry = newAnswer(conv, stream.requestId, stream.mine, stream);
  markUnread(conv);
  return entry;
}

function newAnswer(conv, requestId, mine, stream = null, model = null) {
  const entry = { conv, stream, retry: null, userMsgId: null };
  entry.view = new AnswerView({
    requestId,
    label: model ?? modelLabel(),
    mine,
    onStop: () => state.client?.cancel(requestId),
    onRetry: mine ? () => entry.retry?.() : null,
    onRegenerate: conv.chat ? () => regenerate(conv) : null,
  });
  state.answers.set(requestId, entry);
  conv.append(entry.view.node);
  if (conv.chat) updateLatest(conv);
  scrollToEnd(true);
  return entry;
}

function modelLabel() {
  return ui.model.value || state.session?.default_model || "Assistant";
}

function maxChars() {
  const limit = state.session?.limits?.max_message_chars;
  return Number.isInteger(limit) && limit > 0 ? limit : null;
}

/** Characters as the server counts them (code points). */
function charCount(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

function updateCount() {
  const text = ui.prompt.value;
  const limit = maxChars();
  const count = text.length > 5000 ? charCount(text) : text.length && charCount(text);
  const over = limit !== null && count > limit;
  ui.charCount.textContent = count ? `${count.toLocaleString("en")}${limit ? ` / ${limit.toLocaleString("en")}` : ""}` : "";
  ui.charCount.classList.toggle("over", over);
  if (!over && ui.composerError.dataset.reason === "length") {
    ui.composerError.textContent = "";
    delete ui.composerError.dataset.reason;
  }
  return { count, limit, over };
}

/** The box refuses what the server would refuse, and says why (the text stays). */
function refuseTooLong() {
  const { count, limit, over } = updateCount();
  if (!over) return false;
  ui.composerError.dataset.reason = "length";
  ui.composerError.textContent =
    `Not sent: this message has ${count.toLocaleString("en")} characters and the server ` +
    `accepts at most ${limit.toLocaleString("en")}. Shorten it or send it in parts.`;
  return true;
}

async function send(text) {
  const conv = activeConv();
  if (!conv || !text.trim()) return;
  if (!state.client?.connected) {
    showNotice({ code: "offline", retryable: true, message: "" });
    return;
  }
  hideNotice();
  if (conv.room) {
    await sendRoom(conv, text);
    return;
  }
  if (state.editing?.conv === conv) {
    const { msgId } = state.editing;
    const at = conv.chat.messages.findIndex((m) => m.id === msgId);
    const node = conv.list.querySelector(`[data-msg-id="${msgId}"]`);
    if (node) removeFrom(conv, node);
    if (at >= 0) conv.chat.messages.splice(at);
    state.editing = null;
    ui.composer.classList.remove("editing");
    ui.send.textContent = "Send";
  }
  const message = { id: newId(), role: "user", content: text };
  conv.chat.messages.push(message);
  conv.append(
    userMessage({
      name: myName(),
      id: state.session?.user?.id,
      content: text,
      mine: true,
      msgId: message.id,
      onEdit: () => startEdit(conv, message.id),
    }),
  );
  saveChat(conv);
  await sendPrivate(conv, message);
}

/** Send a private chat's conversation (refused messages left out) for a new answer. */
async function sendPrivate(conv, userMessageEntry) {
  const chat = conv.chat;
  const model = ui.model.value || undefined;
  const requestId = newRequestId();
  const limit = state.session?.limits?.max_messages ?? 500;
  const messages = chat.messages
    .filter((m) => !m.refused && (m.role === "user" || m.content)) // tool-call-only answers
    .map((m) => ({ role: m.role, content: m.content }))
    .slice(-limit);
  const entry = newAnswer(conv, requestId, true, null, model);
  entry.userMsgId = userMessageEntry.id;
  chat.pending = { requestId, model };
  saveChat(conv);
  const { stream, ack } = state.client.chat({ request_id: requestId, model, messages });
  entry.stream = stream;
  entry.retry = () => {
    removeFrom(conv, entry.view.node);
    const refused = chat.messages.find((m) => m.id === entry.userMsgId);
    if (refused) delete refused.refused;
    conv.list.querySelector(`[data-msg-id="${entry.userMsgId}"]`)?.replaceWith(
      userMessage({
        name: myName(),
        content: userMessageEntry.content,
        mine: true,
        msgId: userMessageEntry.id,
        onEdit: () => startEdit(conv, userMessageEntry.id),
      }),
    );
    saveChat(conv);
    sendPrivate(conv, userMessageEntry);
  };
  updateComposer(true);
  await ack;
  updateComposer();
}

async function sendRoom(conv, text) {
  const model = ui.model.value || undefined;
  const payload = {
    request_id: newRequestId(),
    model,
    room: conv.room,
    messages: [{ role: "user", content: text }],
  };
  const { stream, ack } = state.client.chat(payload);
  updateComposer(true);
  const reply = await ack;
  if (reply?.ok) answerFor(stream); // the shared answer's place, once accepted
  const current = state.answers.get(stream.requestId);
  if (current) {
    current.retry = () => {
      removeFrom(conv, current.view.node);
      sendRoom(conv, text);
    };
  } else if (!reply?.ok) {
    showNotice(reply?.error ?? { code: "internal" });
  }
  updateComposer();
}

function onStreamEnd(stream, event, payload) {
  const entry = answerFor(stream);
  if (!entry) return;
  entry.view.setText(stream.text);
  if (stream.reasoning) entry.view.setReasoning(stream.reasoning);
  if (stream.toolCalls.length) entry.view.setToolCalls(stream.toolCalls);
  entry.view.finish(event, payload);
  const conv = entry.conv;
  if (conv.chat) endPrivate(conv, entry, stream, event, payload);
  else if (event === "done") conv.streamedTexts.add(stream.text);
  if (conv.room && !stream.mine) markUnread(conv);
  scrollToEnd();
  updateComposer();
}

function endPrivate(conv, entry, stream, event, payload) {
  const chat = conv.chat;
  if (chat.pending?.requestId === stream.requestId) chat.pending = null;
  if (event === "done" && (stream.text || stream.toolCalls.length)) {
    entry.view.node.dataset.msgId = stream.requestId;
    chat.messages.push({
      id: stream.requestId,
      role: "assistant",
      content: stream.text,
      model: payload?.model ?? undefined,
      reasoning: stream.reasoning || undefined,
      toolCalls: stream.toolCalls.length
        ? stream.toolCalls.map((c) => ({ name: c.name, arguments: c.arguments }))
        : undefined,
      finish: payload?.finish_reason ?? undefined,
    });
  } else if (event === "error" && REQUEST_FAULTS.has(payload?.code) && entry.userMsgId) {
    // The request was refused for what it holds: mark its message, never send it again.
    const message = chat.messages.find((m) => m.id === entry.userMsgId);
    const reason = describeError(payload).title;
    if (message) message.refused = reason;
    const node = conv.list.querySelector(`[data-msg-id="${entry.userMsgId}"]`);
    if (node) markRefused(node, reason);
  }
  saveChat(conv);
  updateLatest(conv);
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
      if (state.editing) cancelEdit();
      else stopActive();
    }
  });
  ui.prompt.addEventListener("input", () => {
    autoGrow();
    updateCount();
  });
  ui.newChat.addEventListener("click", () => {
    activate(newChat().key);
    ui.prompt.focus();
  });
  ui.clearChats.addEventListener("click", () => {
    ui.clearChats.hidden = true;
    ui.clearConfirm.hidden = false;
    ui.clearNo.focus();
  });
  const closeConfirm = () => {
    ui.clearConfirm.hidden = true;
    ui.clearChats.hidden = false;
  };
  ui.clearNo.addEventListener("click", closeConfirm);
  ui.clearYes.addEventListener("click", () => {
    clearSavedChats();
    closeConfirm();
  });
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
  if (refuseTooLong()) return;
  ui.composerError.textContent = "";
  ui.prompt.value = "";
  autoGrow();
  updateCount();
  send(text);
}

function autoGrow() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 200)}px`;
}

boot();
