// Benchmark load generator: many official socket.io-client connections in one Node process.
//
//   node bench/node/load.mjs '<json config>'
//
// Config: {scenario: "burst"|"paced"|"idle", urls: [...], secret, clients, requests,
//          tokens, interval_ms, ramp_ms, timeout_ms, connect_concurrency}
// Protocol on stdio (one JSON object per line): prints {"phase": "ready", ...} once every
// client is connected, waits for a line on stdin ("go"), runs the scenario, prints
// {"phase": "result", ...}; for "idle" the stdin line ends the hold and closes the clients.
//
// Every token's content is a run of "<index36>.<send-time36> " markers written by the bench
// upstream (bench/node/upstream.mjs); the latency of a token is the receive time minus its
// send time on CLOCK_MONOTONIC, shared by every process of the machine.
import crypto from "node:crypto";
import readline from "node:readline";
import { io } from "socket.io-client";

const cfg = JSON.parse(process.argv[2]);
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

function token(sub) {
  const enc = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${enc({ alg: "HS256", typ: "JWT" })}.${enc({ sub, name: sub, iat: now, exp: now + 3600 })}`;
  const sig = crypto.createHmac("sha256", cfg.secret).update(body).digest("base64url");
  return `${body}.${sig}`;
}

const violations = {
  connect_failed: 0,
  refused: 0,
  seq_gap: 0,
  seq_duplicate: 0,
  text_mismatch: 0,
  after_terminal: 0,
  duplicate_terminal: 0,
  missing_terminal: 0,
  error_terminal: 0,
  unknown_request: 0,
};
const requests = new Map();
const latencies = [];
const latencyAt = []; // receive time of each latency sample, for the timeline
const ttfts = [];
let tokenEvents = 0;
let deltas = 0;
let finished = 0;
let expected = 0;
let firstSend = 0;
let lastEnd = 0;
let onAllFinished = () => {};

function onToken(data) {
  const now = nowUs();
  const st = requests.get(data.request_id);
  if (st === undefined) {
    violations.unknown_request++;
    return;
  }
  if (st.terminal) violations.after_terminal++;
  if (data.seq !== st.nextSeq) {
    if (data.seq < st.nextSeq) violations.seq_duplicate++;
    else violations.seq_gap++;
  }
  st.nextSeq = data.seq + 1;
  if (st.firstAt === 0) {
    st.firstAt = now;
    ttfts.push(now - st.sentAt);
  }
  tokenEvents++;
  st.events++;
  const pieces = (st.rest + data.content).split(" ");
  st.rest = pieces.pop();
  for (const piece of pieces) {
    const dot = piece.indexOf(".");
    const index = parseInt(piece.slice(0, dot), 36);
    if (dot < 1 || index !== st.expect) st.textOk = false;
    st.expect++;
    deltas++;
    latencies.push(now - parseInt(piece.slice(dot + 1), 36));
    latencyAt.push(now);
  }
}

function onTerminal(event, data) {
  const st = requests.get(data?.request_id);
  if (st === undefined) {
    if (event === "error") violations.refused++;
    else violations.unknown_request++;
    return;
  }
  if (st.terminal) {
    violations.duplicate_terminal++;
    return;
  }
  st.terminal = event;
  if (event === "error") violations.error_terminal++;
  else if (!st.textOk || st.rest !== "" || st.expect !== cfg.tokens || data.finish_reason !== "stop") {
    violations.text_mismatch++;
  }
  lastEnd = nowUs();
  finished++;
  if (finished === expected) onAllFinished();
}

function connect(i) {
  const url = cfg.urls[i % cfg.urls.length];
  return new Promise((resolve) => {
    const socket = io(url, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      timeout: 30000,
      auth: { token: token(`bench-${i}`) },
    });
    socket.on("connect", () => resolve(socket));
    socket.on("connect_error", () => {
      violations.connect_failed++;
      resolve(null);
    });
    socket.on("token", onToken);
    socket.on("done", (data) => onTerminal("done", data));
    socket.on("error", (data) => onTerminal("error", data));
  });
}

async function connectAll(n) {
  const sockets = new Array(n).fill(null);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      sockets[i] = await connect(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(cfg.connect_concurrency ?? 50, n) }, worker));
  return sockets;
}

function chat(socket, i, r) {
  const requestId = `b${i}_${r}`;
  const st = { sentAt: nowUs(), firstAt: 0, nextSeq: 0, expect: 0, rest: "", textOk: true, terminal: null, events: 0 };
  requests.set(requestId, st);
  if (firstSend === 0) firstSend = st.sentAt;
  socket.emit(
    "chat",
    {
      request_id: requestId,
      model: `bench/${cfg.interval_ms ?? 0}`,
      max_tokens: cfg.tokens,
      messages: [{ role: "user", content: "Benchmark: stream the tokens." }],
    },
    (ack) => {
      if (!ack?.ok) {
        violations.refused++;
        requests.delete(requestId);
        expected--;
        if (finished === expected) onAllFinished();
      }
    },
  );
}

function summary(values) {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] / 1000;
  let sum = 0;
  for (const v of sorted) sum += v;
  return { n: sorted.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted[sorted.length - 1] / 1000, mean: sum / sorted.length / 1000 };
}

// p50/p99/max of the latency per 500 ms of the run: shows whether a tail is a start-up
// spike or spread over the run
function timeline(bucketUs = 500_000) {
  const buckets = new Map();
  for (let i = 0; i < latencies.length; i++) {
    const b = Math.floor((latencyAt[i] - firstSend) / bucketUs);
    if (!buckets.has(b)) buckets.set(b, []);
    buckets.get(b).push(latencies[i]);
  }
  return [...buckets.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([b, values]) => {
      const s = summary(values);
      return [(b * bucketUs) / 1e6, s.n, +s.p50.toFixed(1), +s.p99.toFixed(1), +s.max.toFixed(1)];
    });
}

const started = nowUs();
const sockets = await connectAll(cfg.clients);
const live = sockets.filter((s) => s !== null);
emit({ phase: "ready", connected: live.length, failed: cfg.clients - live.length, connect_s: (nowUs() - started) / 1e6 });
await nextLine();

if (cfg.scenario === "idle") {
  for (const socket of live) socket.disconnect();
  emit({ phase: "result", scenario: "idle", connected: live.length, violations });
  setTimeout(() => process.exit(0), 200);
} else {
  const perClient = cfg.requests ?? 1;
  expected = live.length * perClient;
  const allDone = new Promise((resolve) => {
    onAllFinished = resolve;
  });
  const ramp = cfg.ramp_ms ?? 0;
  sockets.forEach((socket, i) => {
    if (socket === null) return;
    const start = () => {
      for (let r = 0; r < perClient; r++) chat(socket, i, r);
    };
    if (ramp > 0) setTimeout(start, (ramp * i) / cfg.clients);
    else start();
  });
  const timedOut = await Promise.race([
    allDone.then(() => false),
    new Promise((resolve) => setTimeout(() => resolve(true), cfg.timeout_ms ?? 120000)),
  ]);
  if (timedOut) {
    for (const st of requests.values()) if (!st.terminal) violations.missing_terminal++;
  }
  await new Promise((resolve) => setTimeout(resolve, 300)); // late duplicates would show here
  const elapsed = (lastEnd - firstSend) / 1e6;
  const events = [...requests.values()].map((st) => st.events);
  emit({
    phase: "result",
    scenario: cfg.scenario,
    requests: requests.size,
    finished,
    deltas,
    token_events: tokenEvents,
    events_per_request_mean: events.length ? events.reduce((a, b) => a + b, 0) / events.length : 0,
    elapsed_s: elapsed,
    tokens_per_s: elapsed > 0 ? deltas / elapsed : 0,
    ttft_ms: summary(ttfts),
    latency_ms: summary(latencies),
    latency_timeline: timeline(), // [t_s, n, p50_ms, p99_ms, max_ms]
    violations,
  });
  for (const socket of live) socket.disconnect();
  setTimeout(() => process.exit(0), 200);
}
