// The benchmark's peer: the relay a competent Node.js developer would write with the
// reference Socket.IO server (socket.io@4): JWT (HS256) checked at connect, the upstream
// called with fetch and its SSE stream parsed, one `token` event per delta, one `done` or
// `error` at the end, `cancel` and disconnect abort the upstream request.
//
//   PORT=... JWT_SECRET=... OPENROUTER_BASE_URL=http://127.0.0.1:n/v1 node bench/node/peer.mjs
import crypto from "node:crypto";
import http from "node:http";
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? 8001);
const secret = process.env.JWT_SECRET ?? "";
const baseUrl = (process.env.OPENROUTER_BASE_URL ?? "https://openrouter.ai/api/v1").replace(/\/$/, "");
const apiKey = process.env.OPENROUTER_API_KEY ?? "";
const defaultModel = process.env.DEFAULT_MODEL ?? "google/gemini-flash-1.5";

function verifyJwt(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  const [header, payload, signature] = parts;
  const expected = crypto.createHmac("sha256", secret).update(`${header}.${payload}`).digest();
  const given = Buffer.from(signature, "base64url");
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) return null;
  try {
    const head = JSON.parse(Buffer.from(header, "base64url").toString("utf8"));
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
    if (head.alg !== "HS256" || typeof claims.sub !== "string") return null;
    if (typeof claims.exp !== "number" || claims.exp * 1000 <= Date.now()) return null;
    return claims;
  } catch {
    return null;
  }
}

const httpServer = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(404).end();
});
const io = new Server(httpServer, { serveClient: false });

io.use((socket, next) => {
  const claims = verifyJwt(socket.handshake.auth?.token);
  if (!claims) {
    const err = new Error("unauthorized");
    err.data = { code: "unauthorized", message: "The token is invalid." };
    next(err);
    return;
  }
  socket.data.user = { id: claims.sub, name: claims.name ?? claims.sub };
  next();
});

async function relay(socket, requestId, body, signal) {
  let seq = 0;
  let finishReason = null;
  let model = body.model;
  let usage = null;
  const res = await fetch(`${baseUrl}/chat/completions`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${apiKey}`,
      "Content-Type": "application/json",
      Accept: "text/event-stream",
    },
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!res.ok) throw new Error(`upstream status ${res.status}`);
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const bytes of res.body) {
    buffer += decoder.decode(bytes, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.model) model = chunk.model;
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices?.[0];
        if (choice?.finish_reason) finishReason = choice.finish_reason;
        const content = choice?.delta?.content;
        if (content) socket.emit("token", { request_id: requestId, seq: seq++, content });
      }
    }
  }
  socket.emit("done", {
    request_id: requestId,
    finish_reason: finishReason ?? "stop",
    model,
    usage: {
      prompt_tokens: usage?.prompt_tokens ?? null,
      completion_tokens: usage?.completion_tokens ?? null,
      total_tokens: usage?.total_tokens ?? null,
    },
  });
}

io.on("connection", (socket) => {
  const running = new Map();
  socket.emit("session", { sid: socket.id, user: socket.data.user, default_model: defaultModel, protocol: 1 });

  socket.on("chat", (req, ack) => {
    const reply = typeof ack === "function" ? ack : () => {};
    if (!req || !Array.isArray(req.messages) || req.messages.length === 0) {
      const error = { code: "invalid_payload", message: "messages is required", retryable: false };
      reply({ ok: false, error });
      socket.emit("error", error);
      return;
    }
    const requestId = req.request_id ?? crypto.randomUUID();
    if (running.has(requestId)) {
      reply({ ok: false, error: { code: "invalid_payload", message: "request_id in flight" } });
      return;
    }
    const controller = new AbortController();
    running.set(requestId, controller);
    reply({ ok: true, request_id: requestId });
    const body = { model: req.model ?? defaultModel, messages: req.messages };
    for (const name of ["temperature", "top_p", "max_tokens", "stop", "seed"]) {
      if (req[name] !== undefined) body[name] = req[name];
    }
    relay(socket, requestId, body, controller.signal)
      .catch((err) => {
        if (controller.signal.aborted) {
          socket.emit("done", { request_id: requestId, finish_reason: "cancelled", model: body.model, usage: {} });
        } else {
          socket.emit("error", { request_id: requestId, code: "upstream_error", message: String(err.message), retryable: true });
        }
      })
      .finally(() => running.delete(requestId));
  });

  socket.on("cancel", (req, ack) => {
    const controller = running.get(req?.request_id);
    if (controller) controller.abort();
    if (typeof ack === "function") ack(controller ? { ok: true } : { ok: false, error: { code: "not_found" } });
  });

  socket.on("disconnect", () => {
    for (const controller of running.values()) controller.abort();
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: httpServer.address().port }) + "\n");
});
process.on("SIGTERM", () => process.exit(0));
