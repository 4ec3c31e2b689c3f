// Rooms: join, leave, members, the room's messages and shared answers.

import { describeError } from "./errors.js";
import { newRequestId } from "./relay.js";
import { AnswerView, Conversation, avatar, h, userMessage } from "./view.js";
import { ROOM_NAME, ui, state } from "./state.js";
import { showNotice } from "./session.js";
import {
  addConversation,
  removeConversation,
  activate,
  markUnread,
  removeFrom,
  answerFor,
  updateComposer,
  scrollToEnd,
} from "./conversations.js";

export function roomKey(room) {
  return `room:${room}`;
}

export function addRoom(room) {
  return addConversation(new Conversation(roomKey(room), room, room), ui.roomList, "#");
}

export function saveRooms() {
  state.store?.saveRooms([...state.convs.values()].filter((c) => c.room).map((c) => c.room));
}

export function setMembers(conv, members) {
  conv.members = members.filter((m) => m && typeof m.id === "string");
  if (conv.key === state.active) renderMembers(conv);
}

export function renderMembers(conv) {
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

export async function joinRoom(room) {
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

export function applyJoin(conv, ack) {
  if (Array.isArray(ack.members)) setMembers(conv, ack.members);
  for (const message of Array.isArray(ack.history) ? ack.history : []) {
    showRoomMessage(conv, message, false);
  }
  scrollToEnd(true);
}

export async function leaveRoom(conv) {
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

export function onRoomMessage(message) {
  const conv = state.convs.get(roomKey(message?.room));
  if (!conv) return;
  showRoomMessage(conv, message, true);
}

export function showRoomMessage(conv, message, live) {
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

export async function sendRoom(conv, text) {
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
