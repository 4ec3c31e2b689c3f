// RelayClient: the llm-relay wire protocol v2 (PROTOCOL.md §1) over socket.io-client.
// One module for the browser page and Node (clients/js/chat.mjs): the caller passes
// socket.io-client's `io` (the page its vendored ES build, Node the npm package).
//
// It owns what every client needs and a UI should not care about:
//   - ordering: stream events (`token`, `reasoning`, `tool_call` share one `seq`) are
//     applied strictly in `seq` order, exactly once (duplicates dropped, early ones held
//     until the gap is filled);
//   - reconnect: socket.io-client reconnects by itself after a lost transport; then this
//     client re-joins its rooms and sends `resume {request_id, last_seq}` for every answer
//     still streaming, so the text continues where it stopped;
//   - late joiners: a room answer first seen mid-stream is resumed from the start;
//   - tokens: `getToken` is read at each connect; with `renewToken` the client asks for a
//     new token before the current one expires and hands it to the server (`refresh`).
//
// Types are JSDoc, checked by `tsc --noEmit` (tsconfig.json; `make lint`).

/**
 * @typedef {import("socket.io-client").Socket} Socket
 * @typedef {typeof import("socket.io-client").io} IoFactory
 *
 * @typedef {{code: string, message?: string, retryable?: boolean, retry_after?: number,
 *   details?: {field: string, message: string}[], request_id?: string, room?: string | null,
 *   last_seq?: number}} ErrorPayload
 * @typedef {{id: string, type: "function", function: {name: string, arguments: string}}} ToolCall
 * @typedef {{prompt_tokens?: number | null, completion_tokens?: number | null,
 *   total_tokens?: number | null, cost?: number | null, cached_tokens?: number | null,
 *   reasoning_tokens?: number | null}} Usage
 * @typedef {{request_id: string, finish_reason: string | null, model?: string | null,
 *   usage?: Usage | null, last_seq?: number, generation_id?: string | null,
 *   provider?: string | null, native_finish_reason?: string | null,
 *   tool_calls?: ToolCall[] | null, reasoning_details?: object[] | null,
 *   room?: string | null}} DonePayload
 * @typedef {{request_id: string, seq: number, content: string, room?: string | null}} TextEvent
 * @typedef {{request_id: string, seq: number, index: number, id?: string | null,
 *   name?: string | null, arguments: string, room?: string | null}} ToolCallEvent
 * @typedef {{kind: "token", data: TextEvent} | {kind: "reasoning", data: TextEvent}
 *   | {kind: "tool_call", data: ToolCallEvent}} StreamEvent
 * @typedef {{id: string, name: string}} Member
 * @typedef {{room: string, id: string, user: Member, role: string, content: unknown,
 *   ts: number}} RoomMessage
 * @typedef {{sid: string, user: Member, limits: {max_payload_bytes: number,
 *   max_messages: number, max_message_chars: number, max_streams_per_connection: number,
 *   rate_limit_per_minute: number}, default_model: string, protocol: number}} Session
 * @typedef {{ok: true, [key: string]: any} | {ok: false, error: ErrorPayload}} Ack
 * @typedef {{role: string, content?: unknown, [key: string]: unknown}} Message
 * @typedef {{messages: Message[], request_id?: string, model?: string,
 *   room?: string | null, [key: string]: unknown}} ChatRequest
 * @typedef {{index: number, id: string | null, name: string | null, arguments: string}} ToolCallState
 * @typedef {"connecting" | "connected" | "reconnecting" | "closed" | "refused" | "offline"} Status
 *
 * @typedef {object} Handlers  callbacks, all optional
 * @property {(stream: Stream, delta: string) => void} [onText]       answer text, in order
 * @property {(stream: Stream, delta: string) => void} [onReasoning]  reasoning text, in order
 * @property {(stream: Stream, call: ToolCallState, delta: ToolCallEvent) => void} [onToolCall]
 * @property {(stream: Stream) => void} [onStreamStart]  another room member's answer appeared
 * @property {(stream: Stream, event: "done" | "error", payload: any) => void} [onEnd]
 *   exactly once per stream: `done` (DonePayload) or `error` (ErrorPayload)
 * @property {(message: RoomMessage) => void} [onMessage]
 * @property {(presence: {room: string, members: Member[]}) => void} [onPresence]
 * @property {(session: Session) => void} [onSession]
 * @property {(status: Status) => void} [onStatus]
 * @property {(error: ErrorPayload) => void} [onProblem]  an error without request_id
 * @property {(error: {code: string, message?: string}) => void} [onRefused]  connect refused
 * @property {(room: string, ack: Ack) => void} [onRejoin]  a room re-joined after a drop
 * @property {(expiresAt: number) => void} [onRefreshed]  the server took a renewed token
 *
 * @typedef {object} Options
 * @property {IoFactory} io                       socket.io-client's `io`
 * @property {() => (string | null)} getToken     the current access token (read at each connect)
 * @property {() => Promise<string | null>} [renewToken]  a fresh token (called before expiry)
 * @property {string} [url]                       server origin; default: the page's
 * @property {string} [path]                      Socket.IO path; default /socket.io
 * @property {string[]} [transports]              default ["websocket", "polling"]
 * @property {Handlers} [handlers]
 * @property {number} [refreshLeadS]              renew this long before `exp` (default 60 s)
 */

const RESUME_GIVE_UP = new Set(["not_found", "forbidden", "unauthorized", "invalid_payload"]);

/** A fresh request id (1-64 chars of [A-Za-z0-9_-]). */
export function newRequestId() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return "r" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * `exp` of a JWT (not verified: only to time its renewal), or null.
 * @param {string | null | undefined} token
 * @returns {number | null}
 */
export function tokenExpiry(token) {
  try {
    const part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const text = atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="));
    const exp = JSON.parse(text).exp;
    return Number.isFinite(exp) ? exp : null;
  } catch {
    return null;
  }
}

/** One request's answer as it streams (own, or another room member's). */
export class Stream {
  /**
   * @param {string} requestId
   * @param {string | null | undefined} room
   * @param {boolean} mine
   */
  constructor(requestId, room, mine) {
    this.requestId = requestId;
    /** @type {string | null} */
    this.room = room ?? null;
    this.mine = mine;
    this.lastSeq = -1; // last seq applied
    this.text = "";
    this.reasoning = "";
    /** @type {ToolCallState[]} */
    this.toolCalls = [];
    /** @type {Map<number, StreamEvent>} seq -> event waiting for a gap to fill */
    this.held = new Map();
    this.accepted = false;
    this.finished = false;
    this.resuming = false;
    /** @type {["done" | "error", any] | null} a terminal event seen while a gap was open */
    this.pendingEnd = null;
    this.endResumed = false; // a resume was sent because the end said events were missing
    /** @type {["done" | "error", any] | null} */
    this.result = null;
    /** @type {(end: ["done" | "error", any]) => void} */
    this.settle = () => {};
    /** @type {Promise<["done" | "error", any]>} resolves once the stream has ended */
    this.ended = new Promise((resolve) => {
      this.settle = resolve;
    });
  }
}

export class RelayClient {
  /** @param {Options} options */
  constructor({
    io,
    getToken,
    renewToken,
    url,
    path = "/socket.io",
    transports = ["websocket", "polling"],
    handlers = {},
    refreshLeadS = 60,
  }) {
    this.io = io;
    this.getToken = getToken;
    this.renewToken = renewToken;
    this.url = url;
    this.path = path;
    this.transports = transports;
    this.h = handlers;
    this.refreshLeadS = refreshLeadS;
    /** @type {Map<string, Stream>} */
    this.streams = new Map();
    /** @type {Set<string>} */
    this.rooms = new Set();
    /** @type {Session | null} */
    this.session = null;
    /** @type {Socket | null} */
    this.socket = null;
    this.everConnected = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.refreshTimer = null;
  }

  connect() {
    if (this.socket) return;
    const options = {
      path: this.path,
      /** @param {(data: object) => void} cb */
      auth: (cb) => {
        const token = this.getToken();
        cb(token ? { token } : {});
      },
      transports: this.transports,
      tryAllTransports: true,
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
      timeout: 10000,
    };
    const socket = this.url ? this.io(this.url, options) : this.io(options);
    this.socket = socket;
    socket.on("connect", () => this.#onConnect());
    socket.on("disconnect", (reason) => this.#onDisconnect(reason));
    socket.on("connect_error", (err) => this.#onConnectError(err));
    socket.io.on("reconnect_attempt", () => this.#status("reconnecting"));
    socket.on("session", (/** @type {Session} */ s) => {
      this.session = s;
      this.h.onSession?.(s);
    });
    socket.on("token", (d) => this.#onStreamEvent("token", d));
    socket.on("reasoning", (d) => this.#onStreamEvent("reasoning", d));
    socket.on("tool_call", (d) => this.#onStreamEvent("tool_call", d));
    socket.on("done", (d) => this.#onTerminal("done", d));
    socket.on("error", (d) => this.#onTerminal("error", d));
    socket.on("message", (d) => this.h.onMessage?.(d));
    socket.on("presence", (d) => this.h.onPresence?.(d));
    this.#status("connecting");
    this.#scheduleRefresh();
  }

  /** A deliberate disconnect: the server stops this connection's answers at once. */
  disconnect() {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (!this.socket) return;
    this.socket.removeAllListeners();
    this.socket.io.removeAllListeners();
    this.socket.disconnect();
    this.socket = null;
    this.#status("offline");
  }

  /** Reconnect after the server refused or closed the connection (e.g. a new token). */
  reconnect() {
    if (!this.socket) return this.connect();
    if (!this.socket.connected) this.socket.connect();
    this.#scheduleRefresh();
  }

  get connected() {
    return Boolean(this.socket?.connected);
  }

  /**
   * @param {string} event
   * @param {object} payload
   * @param {number} [timeoutMs]
   * @returns {Promise<Ack>}
   */
  #emit(event, payload, timeoutMs = 15000) {
    const socket = this.socket;
    if (!socket) return Promise.resolve(problem("offline", "Not connected."));
    return socket
      .timeout(timeoutMs)
      .emitWithAck(event, payload)
      .catch(() => problem("timeout", "The server did not answer in time.", true));
  }

  /**
   * Start a chat. Returns {stream, ack} at once (`ack` is a promise of the server's
   * acknowledgement). The stream ends through onEnd exactly once, also when the request
   * is refused (by the server's `error` event, or by the ack alone); `stream.ended` is a
   * promise of that end.
   * @param {ChatRequest} payload
   * @returns {{stream: Stream, ack: Promise<Ack>}}
   */
  chat(payload) {
    const requestId = payload.request_id ?? newRequestId();
    const stream = new Stream(requestId, payload.room, true);
    this.streams.set(requestId, stream);
    if (!this.connected) {
      const ack = problem("offline", "Not connected to the server.", true);
      this.#finish(stream, "error", { request_id: requestId, ...ack.error });
      return { stream, ack: Promise.resolve(ack) };
    }
    const ack = this.#emit("chat", { ...payload, request_id: requestId }).then((reply) => {
      if (reply.ok) {
        stream.accepted = true;
      } else if (!stream.finished) {
        this.#finish(stream, "error", { request_id: requestId, ...reply.error });
      }
      return reply;
    });
    return { stream, ack };
  }

  /** @param {string} requestId */
  cancel(requestId) {
    return this.#emit("cancel", { request_id: requestId });
  }

  /** @param {string} room */
  async join(room) {
    const ack = await this.#emit("join", { room });
    if (ack.ok) this.rooms.add(room);
    return ack;
  }

  /** @param {string} room */
  async leave(room) {
    this.rooms.delete(room);
    for (const s of this.streams.values()) {
      if (s.room === room && !s.mine) this.streams.delete(s.requestId);
    }
    return this.#emit("leave", { room });
  }

  /**
   * Hand the server a newer token for the same user (before the current one expires).
   * @param {string} token
   */
  async refresh(token) {
    const ack = await this.#emit("refresh", { token });
    if (ack.ok) {
      this.h.onRefreshed?.(ack.expires_at);
      this.#scheduleRefresh(token);
    }
    return ack;
  }

  /**
   * Resume a stream from `stream.lastSeq` (also one this client never saw: pass a new
   * Stream for a request id kept from before a reload).
   * @param {Stream} stream
   */
  adopt(stream) {
    this.streams.set(stream.requestId, stream);
    if (this.connected) return this.#resume(stream);
    stream.resuming = true; // resumed on connect
    return Promise.resolve();
  }

  // -- token renewal -------------------------------------------------------------

  /** @param {string | null} [token] */
  #scheduleRefresh(token = this.getToken()) {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    const exp = tokenExpiry(token);
    if (!this.renewToken || exp === null) return;
    const lifetime = exp * 1000 - Date.now();
    const lead = this.refreshLeadS * 1000;
    // Renew `refreshLeadS` before `exp`, or at half-life for a short-lived token.
    const wait = Math.max(0, lifetime > 2 * lead ? lifetime - lead : lifetime / 2);
    this.refreshTimer = setTimeout(() => this.#renew(), wait);
    // Node: a pending renewal must not keep a finished script alive.
    /** @type {any} */ (this.refreshTimer).unref?.();
  }

  async #renew() {
    let token = null;
    try {
      token = await this.renewToken?.();
    } catch {
      token = null;
    }
    if (!token) return; // the caller's renewToken decides what the user sees
    if (this.connected) await this.refresh(token);
    else this.#scheduleRefresh(token); // the next connect sends it (getToken)
  }

  // -- incoming stream events ------------------------------------------------------

  /** @param {any} d */
  #streamFor(d) {
    if (!d || typeof d.request_id !== "string") return null;
    let s = this.streams.get(d.request_id);
    if (!s && d.room && this.rooms.has(d.room)) {
      s = new Stream(d.request_id, d.room, false); // another member's answer
      this.streams.set(d.request_id, s);
      this.h.onStreamStart?.(s);
    }
    return s ?? null;
  }

  /**
   * @param {"token" | "reasoning" | "tool_call"} kind
   * @param {any} d
   */
  #onStreamEvent(kind, d) {
    const s = this.#streamFor(d);
    if (!s || s.finished || !Number.isInteger(d.seq)) return;
    if (kind === "tool_call" ? !Number.isInteger(d.index) : typeof d.content !== "string") return;
    if (d.seq <= s.lastSeq) return; // already applied (a replay overlapping live events)
    s.held.set(d.seq, /** @type {StreamEvent} */ ({ kind, data: d }));
    let text = "";
    let reasoning = "";
    const flush = () => {
      if (text) this.h.onText?.(s, text);
      if (reasoning) this.h.onReasoning?.(s, reasoning);
      text = reasoning = "";
    };
    for (let next = s.held.get(s.lastSeq + 1); next; next = s.held.get(s.lastSeq + 1)) {
      s.held.delete(s.lastSeq + 1);
      s.lastSeq += 1;
      if (next.kind === "token") {
        if (reasoning) flush();
        s.text += next.data.content;
        text += next.data.content;
      } else if (next.kind === "reasoning") {
        if (text) flush();
        s.reasoning += next.data.content;
        reasoning += next.data.content;
      } else {
        flush();
        const call = toolCall(s, next.data);
        this.h.onToolCall?.(s, call, next.data);
      }
    }
    flush();
    if (s.held.size && !s.resuming) {
      // A gap: we came in mid-stream (late join) or missed events. Ask for the rest.
      this.#resume(s);
    }
    this.#maybeEnd(s);
  }

  /**
   * @param {"done" | "error"} event
   * @param {any} d
   */
  #onTerminal(event, d) {
    if (event === "error" && (!d || !d.request_id)) {
      this.h.onProblem?.(d ?? { code: "internal" }); // connection-level (e.g. token_expired)
      return;
    }
    const s = this.#streamFor(d);
    if (!s || s.finished) return;
    // `last_seq` (v2) says which stream events came before the end: missing ones are
    // fetched with one resume (once: a log that cannot deliver them must not loop).
    const missed = Number.isInteger(d.last_seq) && d.last_seq > s.lastSeq && !s.endResumed;
    if (s.held.size || s.resuming || missed) {
      s.pendingEnd = [event, d];
      if (!s.resuming && !s.held.size) {
        s.endResumed = true;
        this.#resume(s);
      }
      return;
    }
    this.#finish(s, event, d);
  }

  /** @param {Stream} s */
  #maybeEnd(s) {
    if (!s.pendingEnd || s.held.size || s.resuming || s.finished) return;
    const [event, d] = s.pendingEnd;
    // Events before the end are still missing: the replay under way ends with its own
    // terminal event (handled by #onTerminal).
    if (Number.isInteger(d.last_seq) && d.last_seq > s.lastSeq) return;
    this.#finish(s, event, d);
  }

  /**
   * @param {Stream} s
   * @param {"done" | "error"} event
   * @param {any} d
   */
  #finish(s, event, d) {
    if (s.finished) return;
    s.finished = true;
    s.result = [event, d];
    s.held.clear();
    this.h.onEnd?.(s, event, d);
    s.settle(s.result);
  }

  /** @param {Stream} s */
  async #resume(s) {
    s.resuming = true;
    const ack = await this.#emit("resume", { request_id: s.requestId, last_seq: s.lastSeq });
    s.resuming = false;
    if (ack.ok) {
      this.#maybeEnd(s); // the replay follows the ack; its terminal event ends the stream
      return;
    }
    const code = ack.error?.code ?? "internal";
    if (s.pendingEnd) {
      const [event, d] = s.pendingEnd;
      s.pendingEnd = null;
      this.#finish(s, event, d);
    } else if (RESUME_GIVE_UP.has(code)) {
      this.#finish(s, "error", {
        request_id: s.requestId,
        room: s.room,
        code,
        retryable: false,
        message: "The answer could not be resumed after the connection dropped.",
      });
    }
  }

  // -- connection ------------------------------------------------------------------

  async #onConnect() {
    const again = this.everConnected;
    this.everConnected = true;
    this.#status("connected");
    const open = [...this.streams.values()].filter((s) => !s.finished);
    if (!again && !open.length && !this.rooms.size) return;
    // Back after a drop (or adopted streams and rooms after a reload): rooms first (a
    // member may resume a room's answer), then streams.
    for (const s of open) s.resuming = true;
    for (const room of [...this.rooms]) {
      const ack = await this.#emit("join", { room });
      if (!ack.ok) this.rooms.delete(room);
      this.h.onRejoin?.(room, ack);
    }
    await Promise.all(open.map((s) => this.#resume(s)));
  }

  /** @param {string} reason */
  #onDisconnect(reason) {
    if (reason === "io server disconnect") {
      this.#status("closed"); // the server closed it: socket.io does not retry by itself
    } else if (reason !== "io client disconnect") {
      this.#status("reconnecting");
    }
  }

  /** @param {Error & {data?: any}} err */
  async #onConnectError(err) {
    if (this.socket?.active) {
      this.#status("reconnecting"); // a transport failure: socket.io retries by itself
      return;
    }
    const data = err?.data && typeof err.data === "object" ? err.data : {};
    const code = data.code ?? err?.message ?? "unauthorized";
    if (code === "token_expired" && this.renewToken) {
      const token = await this.renewToken().catch(() => null);
      if (token) {
        this.socket?.connect(); // getToken now answers the renewed token
        return;
      }
    }
    this.#status("refused");
    this.h.onRefused?.({ code, message: data.message });
  }

  /** @param {Status} state */
  #status(state) {
    this.h.onStatus?.(state);
  }
}

/**
 * The tool call a `tool_call` delta belongs to, with its arguments joined so far.
 * @param {Stream} s
 * @param {ToolCallEvent} d
 */
function toolCall(s, d) {
  let call = s.toolCalls.find((c) => c.index === d.index);
  if (!call) {
    call = { index: d.index, id: null, name: null, arguments: "" };
    s.toolCalls.push(call);
  }
  if (d.id) call.id = d.id;
  if (d.name) call.name = d.name;
  if (typeof d.arguments === "string") call.arguments += d.arguments;
  return call;
}

/**
 * @param {string} code
 * @param {string} message
 * @returns {{ok: false, error: ErrorPayload}}
 */
function problem(code, message, retryable = false) {
  return { ok: false, error: { code, message, retryable } };
}
