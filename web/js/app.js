// The chat page: start-up, the client's callbacks, the static controls.

import * as api from "./api.js";
import { describeError } from "./errors.js";
import { io } from "../vendor/socket.io.esm.min.js";
import { RelayClient } from "./relay.js";
import { ChatStore } from "./store.js";
import { h, notice } from "./view.js";
import { AUTH_KEY, MODEL_KEY, $, ui, state } from "./state.js";
import {
  loadAuth,
  authFrom,
  showLogin,
  signIn,
  signOut,
  setStatus,
  onRefused,
  onConnectionProblem,
  scheduleExpiryWarning,
} from "./session.js";
import {
  roomKey,
  addRoom,
  saveRooms,
  setMembers,
  joinRoom,
  applyJoin,
  leaveRoom,
  onRoomMessage,
} from "./rooms.js";
import { newChat, clearSavedChats, restore, cancelEdit } from "./chats.js";
import {
  resetConversations,
  activeConv,
  activate,
  answerFor,
  updateCount,
  refuseTooLong,
  send,
  onStreamEnd,
  stopActive,
  queueRender,
  openSidebar,
  closeSidebar,
  autoGrow,
} from "./conversations.js";

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

export function start(auth) {
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

boot();
