// What the page keeps in the browser (localStorage), per user id: the private chats, the
// rooms joined, and the request id of a private answer still streaming (resumed after a
// reload). Nothing here is sent anywhere; "Clear saved chats" removes it all.

const PREFIX = "llm-relay.v1.";
const MAX_CHATS = 50;

/**
 * @typedef {{id: string, role: "user" | "assistant", content: string, refused?: string,
 *   model?: string, reasoning?: string, toolCalls?: {name: string | null, arguments: string}[],
 *   finish?: string}} StoredMessage
 * @typedef {{id: string, title: string, updated: number, messages: StoredMessage[],
 *   pending?: {requestId: string, model?: string} | null}} StoredChat
 */

export function newId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A chat's title: the start of its first user message. */
export function titleOf(chat) {
  const first = chat.messages.find((m) => m.role === "user" && !m.refused);
  const text = (first?.content ?? "").replace(/\s+/g, " ").trim();
  if (!text) return "New chat";
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

export class ChatStore {
  /** @param {string} userId */
  constructor(userId) {
    this.chatsKey = `${PREFIX}chats.${userId}`;
    this.roomsKey = `${PREFIX}rooms.${userId}`;
  }

  /** @returns {StoredChat[]} newest first */
  chats() {
    const list = read(this.chatsKey);
    return Array.isArray(list)
      ? list.filter((c) => c && typeof c.id === "string" && Array.isArray(c.messages))
      : [];
  }

  /** @param {StoredChat} chat */
  save(chat) {
    if (!chat.messages.length && !chat.pending) return;
    chat.updated = Date.now();
    const others = this.chats().filter((c) => c.id !== chat.id);
    const list = [chat, ...others].slice(0, MAX_CHATS);
    // Over the browser's quota: drop the oldest chats until it fits.
    while (list.length && !write(this.chatsKey, list)) list.pop();
  }

  /** @param {string} id */
  remove(id) {
    write(this.chatsKey, this.chats().filter((c) => c.id !== id));
  }

  /** @returns {string[]} */
  rooms() {
    const list = read(this.roomsKey);
    return Array.isArray(list) ? list.filter((r) => typeof r === "string") : [];
  }

  /** @param {string[]} rooms */
  saveRooms(rooms) {
    write(this.roomsKey, [...new Set(rooms)]);
  }

  clear() {
    localStorage.removeItem(this.chatsKey);
    localStorage.removeItem(this.roomsKey);
  }
}

function read(key) {
  try {
    return JSON.parse(localStorage.getItem(key) || "null");
  } catch {
    return null; // a damaged entry: start afresh
  }
}

function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    return false; // quota exceeded, or storage turned off
  }
}
