#!/usr/bin/env node
// Tool calling over llm-relay (protocol v2) with the shared client module: the model asks
// for a function, this script runs it and sends the result back, until the model answers.
//
//   npm ci                                                     # once, in the repository
//   LLM_RELAY_TOKEN=$(make -s token) node clients/js/tools.mjs "What's the weather in Paris?"
//   node clients/js/tools.mjs --model openai/gpt-4o-mini "Weather in Oslo?"   # a real model
//
// Against `make run` the default model is the demo's `local/simulator-tools`.
// Options (or environment): --url (LLM_RELAY_URL), --token (LLM_RELAY_TOKEN), --model.
// Exit status: 0 answered, 1 the request failed, 2 bad usage or no connection.

import { parseArgs } from "node:util";
import { io } from "socket.io-client";
import { RelayClient } from "../../web/js/relay.js";

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: "string", default: process.env.LLM_RELAY_URL ?? "http://127.0.0.1:8000" },
    token: { type: "string", default: process.env.LLM_RELAY_TOKEN },
    model: { type: "string", default: "local/simulator-tools" },
  },
});

// The functions the model may call: a JSON schema for the model, a JS function for us.
const TOOLS = {
  get_weather: {
    description: "The current weather at a place",
    parameters: {
      type: "object",
      properties: { location: { type: "string", description: "City and country" } },
      required: ["location"],
    },
    /** @param {{location: string}} args */
    run: ({ location }) => ({ location, temperature_c: 18, sky: "partly cloudy" }),
  },
};
const tools = Object.entries(TOOLS).map(([name, t]) => ({
  type: "function",
  function: { name, description: t.description, parameters: t.parameters },
}));

/**
 * @param {number} status
 * @param {string} text
 * @returns {never}
 */
function fail(status, text) {
  process.stderr.write(`${text}\n`);
  process.exit(status);
}

const prompt = positionals.join(" ").trim();
if (!prompt) fail(2, 'usage: node tools.mjs [--model M] "your question"');
if (!opts.token) fail(2, "give --token or LLM_RELAY_TOKEN (e.g. $(make -s token))");

const client = new RelayClient({
  io,
  url: opts.url,
  transports: ["websocket"],
  getToken: () => opts.token ?? null,
  handlers: {
    onText: (_stream, delta) => process.stdout.write(delta),
    onRefused: ({ code, message }) => fail(2, `connection refused: ${code}: ${message ?? ""}`),
  },
});
client.connect();
await new Promise((resolve) => client.socket?.once("session", resolve));

/** @type {import("../../web/js/relay.js").Message[]} */
const messages = [{ role: "user", content: prompt }];
for (let round = 0; round < 5; round += 1) {
  const { stream } = client.chat({ model: opts.model, messages, tools });
  const [event, end] = await stream.ended;
  if (event === "error") fail(1, `error: ${end.code}: ${end.message}`);
  if (end.finish_reason !== "tool_calls" || !end.tool_calls?.length) {
    process.stdout.write("\n");
    client.disconnect();
    process.exit(0);
  }
  // The assistant's turn goes back as the server gave it (reasoning_details included:
  // some providers need it to continue), then one `tool` message per call.
  messages.push({
    role: "assistant",
    content: stream.text || null,
    tool_calls: end.tool_calls,
    ...(end.reasoning_details ? { reasoning_details: end.reasoning_details } : {}),
  });
  for (const call of end.tool_calls) {
    const tool = TOOLS[/** @type {keyof typeof TOOLS} */ (call.function.name)];
    let result;
    try {
      result = tool ? tool.run(JSON.parse(call.function.arguments)) : { error: "unknown tool" };
    } catch (err) {
      result = { error: String(err) };
    }
    process.stderr.write(`[${call.function.name}(${call.function.arguments}) → ${JSON.stringify(result)}]\n`);
    messages.push({ role: "tool", tool_call_id: call.id, content: JSON.stringify(result) });
  }
}
fail(1, "the model kept calling tools; giving up after 5 rounds");
