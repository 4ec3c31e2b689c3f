// Benchmark upstream: a fast local OpenAI-compatible chat-completions endpoint (SSE).
//
//   node bench/node/upstream.mjs            (PORT env, 0 = any; prints {"port": n} when ready)
//   POST /v1/chat/completions  {"model": "bench/<interval_ms>", "max_tokens": n, "stream": true}
//
// It streams n content deltas, `interval_ms` apart (0 = as fast as it can, yielding to the
// event loop between deltas and honouring back-pressure). Every delta's content is
// "<index base36>.<send time base36> ": the send time is CLOCK_MONOTONIC in microseconds
// (process.hrtime), the clock every bench process shares, so a client can compute the
// latency each token picked up on its way and check that the text arrived exact.
import http from "node:http";

const port = Number(process.env.PORT ?? 0);
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const immediate = () => new Promise((resolve) => setImmediate(resolve));
let counter = 0;

function chunk(id, model, created, delta, finish) {
  const reason = finish ? `"${finish}"` : "null";
  return (
    `data: {"id":"${id}","provider":"bench","model":"${model}","object":"chat.completion.chunk",` +
    `"created":${created},"choices":[{"index":0,"delta":${delta},"finish_reason":${reason},` +
    `"native_finish_reason":${reason},"logprobs":null}]}\n\n`
  );
}

async function stream(req, res, body) {
  const model = typeof body.model === "string" ? body.model : "bench/0";
  const interval = Number(model.split("/")[1] ?? 0) || 0;
  const count = Math.max(1, Math.min(Number(body.max_tokens ?? 100) || 100, 100000));
  const id = `gen-bench-${++counter}`;
  const created = Math.floor(Date.now() / 1000);
  let closed = false;
  res.on("close", () => {
    closed = true;
  });
  res.writeHead(200, {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    Connection: "keep-alive",
  });
  res.write(chunk(id, model, created, '{"role":"assistant","content":""}', null));
  const start = performance.now();
  for (let i = 0; i < count && !closed; i++) {
    if (interval > 0) {
      const wait = start + i * interval - performance.now();
      if (wait > 0) await sleep(wait);
    } else if (i > 0) {
      await immediate();
    }
    if (closed) break;
    const content = `${i.toString(36)}.${nowUs().toString(36)} `;
    const ok = res.write(chunk(id, model, created, `{"role":"assistant","content":"${content}"}`, null));
    if (!ok) await new Promise((resolve) => res.once("drain", resolve));
  }
  if (closed) return;
  res.write(chunk(id, model, created, '{"role":"assistant","content":""}', "stop"));
  res.write(
    `data: {"id":"${id}","provider":"bench","model":"${model}","object":"chat.completion.chunk",` +
      `"created":${created},"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":${count},` +
      `"total_tokens":${count + 8}}}\n\n`,
  );
  res.end("data: [DONE]\n\n");
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/health") {
    res.end("ok");
    return;
  }
  if (req.method !== "POST" || !req.url.endsWith("/chat/completions")) {
    res.writeHead(404).end();
    return;
  }
  const parts = [];
  req.on("data", (part) => parts.push(part));
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(parts).toString("utf8"));
    } catch {
      res.writeHead(400, { "Content-Type": "application/json" });
      res.end('{"error":{"message":"invalid JSON"}}');
      return;
    }
    stream(req, res, body).catch(() => res.destroy());
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
process.on("SIGTERM", () => process.exit(0));
