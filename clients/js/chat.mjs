#!/usr/bin/env node
// Stream one chat answer from an llm-relay server to stdout, with socket.io-client and the
// same client module the browser page uses (web/js/relay.js: seq ordering, resume after a
// drop, rooms, token renewal, reasoning and tool-call events).
//
//   npm ci                                                      # once, in the repository
//   LLM_RELAY_TOKEN=<jwt> node clients/js/chat.mjs "Explain SSE in one paragraph"
//   LLM_RELAY_USER=alice LLM_RELAY_PASSWORD=… node clients/js/chat.mjs --model openai/gpt-4o-mini "Hi"
//   node clients/js/chat.mjs --guest "Hi"                       # servers started with --demo
//   echo "Hi" | node clients/js/chat.mjs -                      # the prompt from stdin
//
// Options (or environment): --url (LLM_RELAY_URL, default http://127.0.0.1:8000),
// --token (LLM_RELAY_TOKEN), --user (LLM_RELAY_USER; the password only from
// LLM_RELAY_PASSWORD), --guest, --model, --system, --room (join it and chat there),
// --reasoning (print the model's reasoning, dimmed, on stderr). Tool calls the model makes
// are printed on stderr as `name(arguments)`.
//
// Exit status: 0 answered, 1 the request failed (the protocol's error code on stderr),
// 2 could not connect or bad usage, 130 stopped with Ctrl-C (the server cancels the
// upstream request, so it stops costing money).

import { parseArgs } from "node:util";
import { io } from "socket.io-client";
import { RelayClient } from "../../web/js/relay.js";

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
    reasoning: { type: "boolean", default: false },
  },
});

/**
 * @param {number} status
 * @param {string} text
 * @returns {never}
 */
function fail(status, text) {
  process.stderr.write(`${text}\n`);
  process.exit(status);
}

async function readPrompt() {
  if (positionals.length && positionals[0] !== "-") return positionals.join(" ");
  let text = "";
  for await (const chunk of process.stdin) text += chunk;
  return text.trim();
}

/** POST /auth/token (OAuth2 password form) or /auth/guest → an access token. */
async function signIn() {
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
  return /** @type {string} */ ((await resp.json()).access_token);
}

/** @param {{code: string, message?: string, retry_after?: number}} error */
function describe(error) {
  const wait = error.retry_after != null ? ` (retry after ${error.retry_after} s)` : "";
  return `error: ${error.code}: ${error.message ?? ""}${wait}`;
}

const prompt = await readPrompt();
if (!prompt) fail(2, 'usage: node chat.mjs [--model M] [--room R] "your prompt"');
let token = opts.token ?? (await signIn());
let printed = false; // answer text written (a newline is owed before any error)
let reasoningOpen = false;

const client = new RelayClient({
  io,
  url: opts.url,
  transports: ["websocket"],
  getToken: () => token,
  // A password account signs in again before its token expires; the server is handed the
  // new token on the open connection (`refresh`), so a long answer is not cut off.
  renewToken: opts.user && !opts.token ? async () => (token = await signIn()) : undefined,
  handlers: {
    onText: (_stream, delta) => {
      if (reasoningOpen) process.stderr.write("\x1b[0m\n");
      reasoningOpen = false;
      printed = true;
      process.stdout.write(delta);
    },
    onReasoning: (_stream, delta) => {
      if (!opts.reasoning) return;
      if (!reasoningOpen) process.stderr.write("\x1b[2m");
      reasoningOpen = true;
      process.stderr.write(delta);
    },
    onRefused: ({ code, message }) => fail(2, `connection refused: ${code}: ${message ?? ""}`),
    onProblem: (error) => fail(1, describe(error)),
  },
});

client.connect();
await new Promise((resolve) => client.socket?.once("session", resolve));
if (opts.room) {
  const joined = await client.join(opts.room);
  if (!joined.ok) fail(1, describe(joined.error));
}
/** @type {{role: string, content: string}[]} */
const messages = [];
if (opts.system && !opts.room) messages.push({ role: "system", content: opts.system });
messages.push({ role: "user", content: prompt });
const { stream, ack } = client.chat({
  messages,
  ...(opts.model ? { model: opts.model } : {}),
  ...(opts.room ? { room: opts.room } : {}),
});

// Ctrl-C: cancel the request (the server closes the upstream call and answers `done`
// with finish_reason "cancelled"); a second Ctrl-C quits at once.
let stopping = false;
process.on("SIGINT", () => {
  if (stopping || !client.connected) process.exit(130);
  stopping = true;
  client.cancel(stream.requestId);
  setTimeout(() => process.exit(130), 5000).unref();
});

await ack;
const [event, end] = await stream.ended;
if (reasoningOpen) process.stderr.write("\x1b[0m\n");
for (const call of stream.toolCalls) {
  process.stderr.write(`[tool call ${call.name ?? "?"}(${call.arguments})]\n`);
}
if (event === "error") {
  if (printed) process.stdout.write("\n");
  client.disconnect();
  fail(1, describe(end));
}
process.stdout.write("\n");
const usage = end.usage?.total_tokens != null ? `, ${end.usage.total_tokens} tokens` : "";
process.stderr.write(`[${end.finish_reason}, ${end.model ?? "?"}${usage}]\n`);
client.disconnect();
process.exit(end.finish_reason === "cancelled" ? 130 : 0);
