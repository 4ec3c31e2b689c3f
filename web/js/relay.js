// RelayClient: the llm-relay wire protocol (PROTOCOL.md §1) over socket.io-client.
//
// It owns what every browser client needs and the UI should not care about:
//   - ordering: token events are applied strictly in `seq` order, exactly once
//     (duplicates dropped, early ones held until the gap is filled);
//   - reconnect: socket.io-client reconnects by itself after a lost transport; then
//     this client re-joins its rooms and sends `resume {request_id, last_seq}` for
//     every answer still streaming, so the text continues where it stopped;
//   - late joiners: a room answer first seen mid-stream is resumed from the start.
//
// The UI gets plain callbacks: onText(stream, delta), onEnd(stream, event, payload),
// onMessage, onPresence, onSession, onStatus, onProblem.

import { io } from "../vendor/socket.io.esm.min.js";

const RESUME_GIVE_UP = new Set(["not_found", "forbidden", "unauthorized", "invalid_payload"]);

export function newRequestId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return "r" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Stream {
  constructor(requestId, room, mine) {
    this.requestId = requestId;
    this.room = room ?? null;
    this.mine = mine;
    this.lastSeq = -1; // last seq applied to `text`
    this.text = "";
    this.held = new Map(); // seq -> content, waiting for a gap to fill
    this.accepted = false;
    this.finished = false;
    this.resuming = false;
    this.pendingEnd = null; // a terminal event seen while a gap or resume was open
    this.result = null; // [event, payload] once finished
  }
}

export class RelayClient {
  /**
   * @param {object} options
   * @param {() => (string|null)} options.getToken  current access token (read at each connect)
   * @param {string} [options.url]                  server origin; default: this page's
   * @param {string} [options.path]                 Socket.IO path; default /socket.io
   * @param {object} options.handlers               callbacks (see the top of this file)
   */
  constructor({ getToken, url, path = "/socket.io", handlers }) {
    this.getToken = getToken;
    this.url = url;
    this.path = path;
    this.h = handlers;
    this.streams = new Map();
    this.rooms = new Set();
    this.session = null;
    this.socket = null;
    this.everConnected = false;
  }

  connect() {
    if (this.socket) return;
    const socket = io(this.url, {
      path: this.path,
      auth: (cb) => {
        const token = this.getToken();
        cb(token ? { token } : {});
      },
      transports: ["websocket", "polling"],
      tryAllTransports: true,
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
      timeout: 10000,
    });
    this.socket = socket;
    socket.on("connect", () => this.#onConnect());
    socket.on("disconnect", (reason) => this.#onDisconnect(reason));
    socket.on("connect_error", (err) => this.#onConnectError(err));
    socket.io.on("reconnect_attempt", () => this.#status("reconnecting"));
    socket.on("session", (s) => {
      this.session = s;
      this.h.onSession?.(s);
    });
    socket.on("token", (d) => this.#onToken(d));
    socket.on("done", (d) => this.#onTerminal("done", d));
    socket.on("error", (d) => this.#onTerminal("error", d));
    socket.on("message", (d) => this.h.onMessage?.(d));
    socket.on("presence", (d) => this.h.onPresence?.(d));
    this.#status("connecting");
  }

  /** A deliberate disconnect: the server stops this connection's answers at once. */
  disconnect() {
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
  }

  get connected() {
    return Boolean(this.socket?.connected);
  }

  #emit(event, payload, timeoutMs = 15000) {
    const socket = this.socket;
    if (!socket) return Promise.resolve(problem("unauthorized", "Not connected."));
    return socket
      .timeout(timeoutMs)
      .emitWithAck(event, payload)
      .catch(() => problem("timeout", "The server did not answer in time.", true));
  }

  /**
   * Start a chat. Returns {stream, ack} at once (`ack` is a promise of the server's
   * acknowledgement). The stream ends through onEnd exactly once, also when the request
   * is refused (by the server's `error` event, or by the ack alone).
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
      if (reply?.ok) {
        stream.accepted = true;
      } else if (!stream.finished) {
        this.#finish(stream, "error", { request_id: requestId, ...reply?.error });
      }
      return reply;
    });
    return { stream, ack };
  }

  cancel(requestId) {
    return this.#emit("cancel", { request_id: requestId });
  }

  async join(room) {
    const ack = await this.#emit("join", { room });
    if (ack?.ok) this.rooms.add(room);
    return ack;
  }

  async leave(room) {
    this.rooms.delete(room);
    for (const s of this.streams.values()) {
      if (s.room === room && !s.mine) this.streams.delete(s.requestId);
    }
    return this.#emit("leave", { room });
  }

  refresh(token) {
    return this.#emit("refresh", { token });
  }

  // -- incoming stream events ------------------------------------------------------

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

  #onToken(d) {
    const s = this.#streamFor(d);
    if (!s || s.finished || !Number.isInteger(d.seq) || typeof d.content !== "string") return;
    if (d.seq <= s.lastSeq) return; // already applied (a replay overlapping live events)
    s.held.set(d.seq, d.content);
    let delta = "";
    while (s.held.has(s.lastSeq + 1)) {
      s.lastSeq += 1;
      delta += s.held.get(s.lastSeq);
      s.held.delete(s.lastSeq);
    }
    if (delta) {
      s.text += delta;
      this.h.onText?.(s, delta);
    }
    if (s.held.size && !s.resuming) {
      // A gap: we came in mid-stream (late join) or missed events. Ask for the rest.
      this.#resume(s);
    }
    this.#maybeEnd(s);
  }

  #onTerminal(event, d) {
    if (event === "error" && (!d || !d.request_id)) {
      this.h.onProblem?.(d ?? {}); // a connection-level error (e.g. token_expired)
      return;
    }
    const s = this.#streamFor(d);
    if (!s || s.finished) return;
    if (s.held.size || s.resuming) {
      s.pendingEnd = [event, d];
      return;
    }
    this.#finish(s, event, d);
  }

  #maybeEnd(s) {
    if (s.pendingEnd && !s.held.size && !s.resuming && !s.finished) {
      const [event, d] = s.pendingEnd;
      this.#finish(s, event, d);
    }
  }

  #finish(s, event, d) {
    if (s.finished) return;
    s.finished = true;
    s.result = [event, d];
    s.held.clear();
    this.h.onEnd?.(s, event, d);
  }

  async #resume(s) {
    s.resuming = true;
    const ack = await this.#emit("resume", { request_id: s.requestId, last_seq: s.lastSeq });
    s.resuming = false;
    if (ack?.ok) {
      this.#maybeEnd(s); // the replay follows the ack; its terminal event ends the stream
      return;
    }
    const code = ack?.error?.code ?? "internal";
    if (s.pendingEnd) {
      this.#maybeEnd(s);
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
    if (!again) return;
    // Back after a drop: rooms first (a member may resume a room's answer), then streams.
    const open = [...this.streams.values()].filter((s) => !s.finished);
    for (const s of open) s.resuming = true;
    for (const room of [...this.rooms]) {
      const ack = await this.#emit("join", { room });
      this.h.onRejoin?.(room, ack);
      if (!ack?.ok) this.rooms.delete(room);
    }
    await Promise.all(open.map((s) => this.#resume(s)));
  }

  #onDisconnect(reason) {
    if (reason === "io server disconnect") {
      this.#status("closed"); // the server closed it: socket.io does not retry by itself
    } else if (reason !== "io client disconnect") {
      this.#status("reconnecting");
    }
  }

  #onConnectError(err) {
    if (this.socket?.active) {
      this.#status("reconnecting"); // a transport failure: socket.io retries by itself
      return;
    }
    const data = err?.data && typeof err.data === "object" ? err.data : {};
    this.#status("refused");
    this.h.onRefused?.({ code: data.code ?? err?.message ?? "unauthorized", message: data.message });
  }

  #status(state) {
    this.h.onStatus?.(state);
  }
}

function problem(code, message, retryable = false) {
  return { ok: false, error: { code, message, retryable } };
}
