// The conversation list and the open conversation: answers as they stream, the message
// box (its character count and limit), sending, rendering, the sidebar drawer.

import { newId } from "./store.js";
import { AnswerView, h, userMessage } from "./view.js";
import { ui, state } from "./state.js";
import { showNotice, hideNotice } from "./session.js";
import { roomKey, renderMembers, sendRoom } from "./rooms.js";
import {
  newChat,
  saveChat,
  myName,
  updateLatest,
  regenerate,
  startEdit,
  cancelEdit,
  sendPrivate,
  endPrivate,
} from "./chats.js";

export function resetConversations() {
  state.convs.clear();
  state.answers.clear();
  state.editing = null;
  ui.convList.replaceChildren();
  ui.roomList.replaceChildren();
  ui.messages.replaceChildren();
  state.active = null;
}

export function addConversation(conv, list, icon) {
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

export function removeConversation(conv) {
  state.convs.delete(conv.key);
  conv.navItem.remove();
  conv.list.remove();
  if (state.active === conv.key) {
    const next = [...state.convs.values()].find((c) => c.chat);
    activate((next ?? newChat()).key);
  }
}

export function activeConv() {
  return state.convs.get(state.active);
}

export function activate(key) {
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

export function markUnread(conv) {
  if (conv.key === state.active) return;
  conv.unread += 1;
  conv.badge.hidden = false;
  conv.badge.textContent = String(conv.unread);
  conv.badge.setAttribute("aria-label", `${conv.unread} new`);
}

/** Remove `node` and every message after it from a conversation's list. */
export function removeFrom(conv, node) {
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

export function answerFor(stream) {
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

export function newAnswer(conv, requestId, mine, stream = null, model = null) {
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

export function modelLabel() {
  return ui.model.value || state.session?.default_model || "Assistant";
}

export function maxChars() {
  const limit = state.session?.limits?.max_message_chars;
  return Number.isInteger(limit) && limit > 0 ? limit : null;
}

/** Characters as the server counts them (code points). */
export function charCount(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

export function updateCount() {
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
export function refuseTooLong() {
  const { count, limit, over } = updateCount();
  if (!over) return false;
  ui.composerError.dataset.reason = "length";
  ui.composerError.textContent =
    `Not sent: this message has ${count.toLocaleString("en")} characters and the server ` +
    `accepts at most ${limit.toLocaleString("en")}. Shorten it or send it in parts.`;
  return true;
}

export async function send(text) {
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

export function onStreamEnd(stream, event, payload) {
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

export function ownStreaming(conv) {
  return [...state.answers.values()].filter(
    (e) => e.conv === conv && e.stream?.mine && !e.stream.finished,
  );
}

export function stopActive() {
  for (const entry of ownStreaming(activeConv())) {
    state.client?.cancel(entry.stream.requestId);
  }
}

export function updateComposer(sending = false) {
  const streaming = ownStreaming(activeConv()).length > 0;
  ui.stop.hidden = !streaming;
  ui.send.hidden = streaming;
  ui.send.disabled = sending || !state.client?.connected;
}

export function queueRender() {
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

export function nearBottom() {
  const box = ui.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

export function scrollToEnd(force = false) {
  if (force || nearBottom()) ui.messages.scrollTop = ui.messages.scrollHeight;
}

export function openSidebar(open) {
  ui.sidebar.classList.toggle("open", open);
  ui.menuToggle.setAttribute("aria-expanded", String(open));
}

export function closeSidebar() {
  if (ui.sidebar.classList.contains("open")) openSidebar(false);
}

export function autoGrow() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 200)}px`;
}
