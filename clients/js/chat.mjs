#!/usr/bin/env node
// Stream one chat answer from an llm-relay server to stdout, with socket.io-client.
//
//   npm install socket.io-client
//   LLM_RELAY_TOKEN=<jwt> node chat.mjs "Explain SSE in one paragraph"
//   LLM_RELAY_USER=alice LLM_RELAY_PASSWORD=… node chat.mjs --model openai/gpt-4o-mini "Hi"
//   node chat.mjs --url http://127.0.0.1:8000 --guest "Hi"      # servers started with --demo
//   echo "Hi" | node chat.mjs -                                 # the prompt from stdin
//
// Options (or environment): --url (LLM_RELAY_URL, default http://127.0.0.1:8000),
// --token (LLM_RELAY_TOKEN), --user (LLM_RELAY_USER; the password only from
// LLM_RELAY_PASSWORD), --guest, --model, --system, --room (join it and chat there).
//
// Exit status: 0 answered, 1 the request failed (the protocol's error code on stderr),
// 2 could not connect or bad usage, 130 stopped with Ctrl-C (the server cancels the
// upstream request, so it stops costing money).

import { parseArgs } from "node:util";
import { randomUUID } from "node:crypto";
import { io } from "socket.io-client";

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: "string", default: process.env.LLM_RELAY_URL ?? "http://127.0.0.1:8000" },
    token: { type: "string", default: process.env.LLM_RELAY_TOKEN },
    user: { type: "string", default: process.env.LLM_RELAY_USER },
    guest: { type: "boolean", default: false },
    model: { type: "string" },
    system: { type: "string" },
    room: { type: "string" },
  },
});

const fail = (status, text) => {
  process.stderr.write(`${text}\n`);
  process.exit(status);
};

async function readPrompt() {
  if (positionals.length && positionals[0] !== "-") return positionals.join(" ");
  let text = "";
  for await (const chunk of process.stdin) text += chunk;
  return text.trim();
}

// POST /auth/token (OAuth2 password form) or /auth/guest → an access token.
async function getToken() {
  if (opts.token) return opts.token;
  let resp;
  if (opts.user) {
    const password = process.env.LLM_RELAY_PASSWORD;
    if (!password) fail(2, "set LLM_RELAY_PASSWORD for --user");
    const body = new URLSearchParams({ username: opts.user, password });
    resp = await fetch(new URL("/auth/token", opts.url), { method: "POST", body });
  } else if (opts.guest) {
    resp = await fetch(new URL("/auth/guest", opts.url), { method: "POST" });
  } else {
    fail(2, "give --token, --user (with LLM_RELAY_PASSWORD) or --guest");
  }
  if (!resp.ok) fail(2, `sign-in failed: HTTP ${resp.status}`);
  return (await resp.json()).access_token;
}

function describe(error) {
  const wait = error.retry_after != null ? ` (retry after ${error.retry_after} s)` : "";
  return `error: ${error.code}: ${error.message}${wait}`;
}

const prompt = await readPrompt();
if (!prompt) fail(2, 'usage: node chat.mjs [--model M] [--room R] "your prompt"');
const token = await getToken();

const socket = io(opts.url, { auth: { token }, transports: ["websocket"] });
const requestId = randomUUID();
let lastSeq = -1; // the last token written: what `resume` continues from after a drop
let started = false;
let stopping = false;

socket.on("connect_error", (err) => {
  if (socket.active) return; // a network problem: socket.io-client retries by itself
  fail(2, `connection refused: ${err.data?.code ?? err.message}: ${err.data?.message ?? ""}`);
});

socket.on("connect", async () => {
  if (started) {
    // Reconnected after a drop: continue the answer where it stopped, exactly once.
    const ack = await socket.emitWithAck("resume", { request_id: requestId, last_seq: lastSeq });
    if (!ack.ok) fail(1, describe(ack.error));
    return;
  }
  started = true;
  if (opts.room) {
    const joined = await socket.emitWithAck("join", { room: opts.room });
    if (!joined.ok) fail(1, describe(joined.error));
  }
  const messages = [];
  if (opts.system && !opts.room) messages.push({ role: "system", content: opts.system });
  messages.push({ role: "user", content: prompt });
  const request = { request_id: requestId, messages };
  if (opts.model) request.model = opts.model;
  if (opts.room) request.room = opts.room;
  const ack = await socket.emitWithAck("chat", request);
  if (!ack.ok) fail(1, describe(ack.error)); // refused: validation, limits, model allowlist
});

socket.on("token", (t) => {
  if (t.request_id !== requestId || t.seq <= lastSeq) return;
  lastSeq = t.seq;
  process.stdout.write(t.content);
});

socket.on("done", (d) => {
  if (d.request_id !== requestId) return;
  process.stdout.write("\n");
  const usage = d.usage?.total_tokens != null ? `, ${d.usage.total_tokens} tokens` : "";
  process.stderr.write(`[${d.finish_reason}, ${d.model ?? "?"}${usage}]\n`);
  socket.disconnect();
  process.exit(d.finish_reason === "cancelled" ? 130 : 0);
});

socket.on("error", (e) => {
  if (e.request_id && e.request_id !== requestId) return;
  if (lastSeq >= 0) process.stdout.write("\n");
  socket.disconnect();
  fail(1, describe(e));
});

// Ctrl-C: cancel the request (the server closes the upstream call and answers `done`
// with finish_reason "cancelled"); a second Ctrl-C quits at once.
process.on("SIGINT", () => {
  if (stopping || !socket.connected) process.exit(130);
  stopping = true;
  socket.emit("cancel", { request_id: requestId });
  setTimeout(() => process.exit(130), 5000).unref();
});
