// The conversation list and the message lists: DOM only, no protocol.
//
// Untrusted text (messages, answers, names) only ever reaches the page through
// textContent / createTextNode or the safe Markdown renderer.

import { renderMarkdown } from "./markdown.js";
import { describeError } from "./errors.js";

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function hue(text) {
  let n = 0;
  for (const ch of String(text)) n = (n * 31 + ch.codePointAt(0)) >>> 0;
  return n % 360;
}

export function avatar(name, id) {
  const initial = (String(name || "?").trim()[0] || "?").toUpperCase();
  const node = h("span", { class: "avatar", "aria-hidden": "true" }, initial);
  node.style.setProperty("--avatar-hue", String(hue(id ?? name)));
  return node;
}

function timeOf(ts) {
  const date = ts ? new Date(ts * 1000) : new Date();
  return h(
    "time",
    { datetime: date.toISOString(), class: "msg-time" },
    date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
  );
}

/** One conversation: the private chat, or a room. */
export class Conversation {
  constructor(key, title, room) {
    this.key = key;
    this.title = title;
    this.room = room;
    this.chat = null; // private chat: its stored messages (store.js), sent whole each time
    this.views = new Map(); // private chat: message id -> AnswerView of a stored answer
    this.members = [];
    this.seenIds = new Set(); // room message ids already shown
    this.streamedTexts = new Set(); // room answers shown live (history repeats them)
    this.unread = 0;
    this.list = h("ol", {
      class: "msg-list",
      role: "log",
      "aria-live": "polite",
      "aria-label": room ? `Messages in room ${room}` : "Messages",
      dataset: { conv: key },
    });
    this.empty = h(
      "li",
      { class: "empty" },
      h("p", { class: "empty-title" }, room ? `Room “${room}”` : "Start a conversation"),
      h(
        "p",
        { class: "muted" },
        room
          ? "Everyone in the room sees each message and the shared answer."
          : "Answers stream in as they are written. Press Esc or Stop to interrupt one.",
      ),
    );
    this.list.append(this.empty);
  }

  append(node) {
    this.empty.remove();
    this.list.append(node);
  }
}

/** A user message bubble; `onEdit` adds an Edit button (own private messages). */
export function userMessage({ name, id, content, ts, mine, msgId, onEdit }) {
  const text = typeof content === "string" ? content : contentText(content);
  const edit = onEdit
    ? h(
        "button",
        { class: "btn btn-small btn-ghost msg-action", type: "button", onclick: () => onEdit() },
        "Edit",
      )
    : null;
  const node = h(
    "li",
    { class: `msg msg-user${mine ? " mine" : ""}`, dataset: { role: "user", msgId } },
    avatar(name, id),
    h(
      "div",
      { class: "msg-main" },
      h("div", { class: "msg-meta" }, h("span", { class: "msg-author" }, name), timeOf(ts), edit),
      h("div", { class: "msg-body" }, renderMarkdown(text)),
      h("div", { class: "msg-refusal", role: "status" }),
    ),
  );
  return node;
}

/** Mark a user bubble as refused: the server did not take it, and it is never sent again. */
export function markRefused(node, reason) {
  node.dataset.refused = "true";
  const box = node.querySelector(".msg-refusal");
  if (box) {
    box.replaceChildren(
      h("span", { class: "badge badge-refused" }, "Not sent"),
      h("span", {}, ` ${reason} It is left out of this conversation.`),
    );
  }
}

export function contentText(content) {
  if (!Array.isArray(content)) return String(content ?? "");
  return content
    .filter((p) => p && p.type === "text" && typeof p.text === "string")
    .map((p) => p.text)
    .join("");
}

/** An assistant answer, streaming or finished. */
export class AnswerView {
  constructor({ requestId, label, mine, ts, onRetry, onStop, onRegenerate }) {
    this.requestId = requestId;
    this.text = "";
    this.reasoningText = "";
    this.toolCalls = [];
    this.dirty = false;
    this.body = h("div", { class: "msg-body", dataset: { testid: "answer" } });
    this.reasoningBody = h("div", { class: "reasoning-body" });
    this.reasoningLabel = h("span", {}, "Thinking…");
    this.reasoning = h(
      "details",
      { class: "reasoning", hidden: true },
      h("summary", {}, this.reasoningLabel),
      this.reasoningBody,
    );
    this.tools = h("div", { class: "tool-calls", hidden: true });
    this.copyButton = h(
      "button",
      { class: "btn btn-small btn-ghost msg-action", type: "button", onclick: () => this.copy() },
      "Copy",
    );
    this.regenerateButton = onRegenerate
      ? h(
          "button",
          {
            class: "btn btn-small btn-ghost msg-action",
            type: "button",
            onclick: () => onRegenerate(),
          },
          "Regenerate",
        )
      : null;
    this.actions = h("div", { class: "msg-actions", hidden: true }, this.copyButton, this.regenerateButton);
    this.typing = h(
      "span",
      { class: "typing", "aria-label": "The answer is being written" },
      h("span"),
      h("span"),
      h("span"),
    );
    this.status = h("div", { class: "msg-status" });
    this.author = h("span", { class: "msg-author" }, label);
    this.stopButton = mine
      ? h(
          "button",
          {
            class: "btn btn-small btn-ghost stop-one",
            type: "button",
            onclick: () => onStop?.(),
          },
          "Stop",
        )
      : null;
    this.onRetry = onRetry;
    this.node = h(
      "li",
      {
        class: "msg msg-assistant",
        "aria-busy": "true",
        dataset: { role: "assistant", requestId, state: "streaming" },
      },
      avatar("AI", "assistant"),
      h(
        "div",
        { class: "msg-main" },
        h("div", { class: "msg-meta" }, this.author, timeOf(ts), this.stopButton),
        this.reasoning,
        this.tools,
        this.body,
        this.typing,
        this.status,
        this.actions,
      ),
    );
  }

  setText(text) {
    this.text = text;
    this.dirty = true;
  }

  setReasoning(text) {
    this.reasoningText = text;
    this.dirty = true;
  }

  /** @param {{name: string | null, arguments: string}[]} calls */
  setToolCalls(calls) {
    this.toolCalls = calls.map((c) => ({ name: c.name, arguments: c.arguments }));
    this.dirty = true;
  }

  render() {
    if (!this.dirty) return;
    this.dirty = false;
    this.body.replaceChildren(renderMarkdown(this.text));
    if (this.reasoningText) {
      this.reasoning.hidden = false;
      this.reasoningBody.replaceChildren(renderMarkdown(this.reasoningText));
      const thinking = this.node.dataset.state === "streaming" && !this.text;
      this.reasoningLabel.textContent = thinking ? "Thinking…" : "Reasoning";
    }
    if (this.toolCalls.length) {
      this.tools.hidden = false;
      this.tools.replaceChildren(...this.toolCalls.map(toolCallView));
    }
    const busy = Boolean(this.text || this.reasoningText || this.toolCalls.length);
    this.typing.hidden = busy || this.node.dataset.state !== "streaming";
  }

  async copy() {
    try {
      await navigator.clipboard.writeText(this.text);
      this.copyButton.textContent = "Copied";
    } catch {
      this.copyButton.textContent = "Copy failed";
    }
    setTimeout(() => {
      this.copyButton.textContent = "Copy";
    }, 1500);
  }

  /** Only the newest answer of a private chat offers Regenerate. */
  setLatest(latest) {
    if (this.regenerateButton) this.regenerateButton.hidden = !latest;
  }

  finish(event, payload) {
    this.node.removeAttribute("aria-busy");
    this.typing.remove();
    this.stopButton?.remove();
    this.dirty = true;
    this.actions.hidden = false;
    this.copyButton.hidden = !this.text;
    this.node.dataset.state = event; // no longer "streaming" (set exactly below)
    this.render();
    if (event === "done") {
      const reason = payload?.finish_reason;
      const state = reason === "cancelled" ? "cancelled" : "done";
      this.node.dataset.state = state;
      if (payload?.model) this.author.textContent = payload.model;
      const parts = [];
      if (reason === "cancelled") parts.push(h("span", { class: "badge" }, "Stopped"));
      else if (reason === "length") parts.push(h("span", { class: "badge" }, "Cut off: length limit"));
      else if (reason === "tool_calls") parts.push(h("span", { class: "badge" }, "Called tools"));
      else if (reason && reason !== "stop") parts.push(h("span", { class: "badge" }, reason));
      const tokens = payload?.usage?.total_tokens;
      if (Number.isFinite(tokens)) parts.push(h("span", { class: "muted" }, `${tokens} tokens`));
      this.status.replaceChildren(...parts);
      return;
    }
    this.node.dataset.state = "error";
    this.status.replaceChildren(errorBox(payload, this.onRetry));
  }

  setLabel(label) {
    this.author.textContent = label;
  }
}

/** A tool call the model made: its name and arguments (pretty-printed when JSON). */
function toolCallView(call) {
  let args = call.arguments;
  try {
    args = JSON.stringify(JSON.parse(call.arguments), null, 2);
  } catch {
    /* still streaming, or not JSON: shown as it came */
  }
  return h(
    "div",
    { class: "tool-call", dataset: { tool: call.name ?? "" } },
    h("span", { class: "tool-label" }, "Tool call "),
    h("code", { class: "tool-name" }, `${call.name ?? "?"}(…)`),
    h("pre", { class: "tool-args", tabindex: "0" }, h("code", {}, args)),
  );
}

/** The readable form of a protocol error, with a countdown and a retry button. */
export function errorBox(error, onRetry) {
  const info = describeError(error);
  const box = h(
    "div",
    { class: "msg-error", role: "alert", dataset: { code: info.code } },
    h("strong", {}, info.title),
    info.detail ? h("span", { class: "error-detail" }, info.detail) : null,
    info.fields.length ? h("ul", {}, info.fields.map((f) => h("li", {}, f))) : null,
    h("code", { class: "error-code" }, info.code),
  );
  if (info.retryable && onRetry) {
    const button = h(
      "button",
      { class: "btn btn-small", type: "button", onclick: () => onRetry() },
      "Retry",
    );
    box.append(button);
    if (info.retryAfter) countdown(box, button, info.retryAfter);
  } else if (info.retryAfter) {
    countdown(box, null, info.retryAfter);
  }
  return box;
}

function countdown(box, button, seconds) {
  const label = h("span", { class: "retry-after", "aria-live": "off" });
  box.append(label);
  const until = Date.now() + seconds * 1000;
  if (button) button.disabled = true;
  let shown = false;
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    shown ||= box.isConnected;
    if (shown && !box.isConnected) return; // removed from the page
    if (left > 0) {
      label.textContent = `Try again in ${left} s`;
      setTimeout(tick, 250);
    } else {
      label.textContent = "You can try again now.";
      if (button) button.disabled = false;
    }
  };
  tick();
}

/** A line in the conversation that is not a chat message (joins, refusals). */
export function notice(text, kind = "info") {
  return h("li", { class: `msg-notice ${kind}`, dataset: { role: "notice" } }, text);
}
