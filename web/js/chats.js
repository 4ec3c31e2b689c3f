// Private chats: kept in the browser (store.js), restored after a reload, edited,
// regenerated; refused messages are marked and never sent again.

import { describeError } from "./errors.js";
import { Stream, newRequestId } from "./relay.js";
import { newId, titleOf } from "./store.js";
import { AnswerView, Conversation, markRefused, userMessage } from "./view.js";
import { REQUEST_FAULTS, ui, state } from "./state.js";
import { addRoom, saveRooms } from "./rooms.js";
import {
  addConversation,
  removeConversation,
  activeConv,
  activate,
  removeFrom,
  newAnswer,
  updateCount,
  ownStreaming,
  updateComposer,
  autoGrow,
} from "./conversations.js";

export function chatKey(id) {
  return `chat:${id}`;
}

/** A private chat: its messages are kept in the browser and sent whole each time. */
export function addChat(chat) {
  const conv = new Conversation(chatKey(chat.id), titleOf(chat), null);
  conv.chat = chat;
  addConversation(conv, ui.convList, "✦");
  conv.navItem.hidden = !chat.messages.length && !chat.pending;
  for (const message of chat.messages) showStored(conv, message);
  updateLatest(conv);
  return conv;
}

export function newChat() {
  const current = activeConv();
  if (current?.chat && !current.chat.messages.length && !current.chat.pending) return current;
  return addChat({ id: newId(), title: "New chat", updated: Date.now(), messages: [] });
}

export function saveChat(conv) {
  if (!conv.chat) return;
  state.store?.save(conv.chat);
  conv.title = titleOf(conv.chat);
  conv.label.textContent = conv.title;
  conv.navItem.hidden = false;
  if (conv.key === state.active) ui.chatTitle.textContent = conv.title;
}

export function clearSavedChats() {
  state.store?.clear();
  for (const conv of [...state.convs.values()]) {
    if (!conv.chat) continue;
    for (const entry of ownStreaming(conv)) state.client?.cancel(entry.stream.requestId);
    removeConversation(conv);
  }
  saveRooms(); // the rooms still joined stay remembered
  activate(newChat().key);
}

/** After sign-in or a reload: the saved chats, the rooms to rejoin, answers to resume. */
export function restore() {
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

export function myName() {
  return state.session?.user?.name ?? state.auth?.username ?? "You";
}

/** Render one stored message of a private chat. */
export function showStored(conv, message) {
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
export function updateLatest(conv) {
  const nodes = [...conv.list.querySelectorAll("li.msg-assistant")];
  const last = nodes.at(-1);
  for (const view of [...conv.views.values(), ...answerViews(conv)]) {
    view.setLatest(view.node === last);
  }
}

export function answerViews(conv) {
  return [...state.answers.values()].filter((e) => e.conv === conv).map((e) => e.view);
}

export function regenerate(conv) {
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

export function startEdit(conv, msgId) {
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

export function cancelEdit() {
  if (!state.editing) return;
  state.editing = null;
  ui.composer.classList.remove("editing");
  ui.send.textContent = "Send";
  ui.prompt.value = "";
  updateCount();
  autoGrow();
}

/** Send a private chat's conversation (refused messages left out) for a new answer. */
export async function sendPrivate(conv, userMessageEntry) {
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

export function endPrivate(conv, entry, stream, event, payload) {
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
