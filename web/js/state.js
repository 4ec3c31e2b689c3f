// The page's shared state and its elements, used by every module of the page.

export const AUTH_KEY = "llm-relay.auth";
export const MODEL_KEY = "llm-relay.model";
// A request the server refused, or one the model provider refused for what it says: the
// message is marked refused and never sent again (a retryable refusal offers Retry).
export const REQUEST_FAULTS = new Set([
  "invalid_payload",
  "payload_too_large",
  "model_not_allowed",
  "forbidden",
  "upstream_bad_request",
  "moderation",
]);
export const ROOM_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;
export const EXPIRY_WARNING_S = 120;

export const $ = (id) => document.getElementById(id);

export const ui = {
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

export const state = {
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
