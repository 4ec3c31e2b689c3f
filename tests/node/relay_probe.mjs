// Test probe: the shared client module (web/js/relay.js) under Node with the official
// socket.io-client. argv[2]: JSON {url, token, request: ChatRequest, room?, renewToken?,
// dropAfterTokens?, cancelAfterTokens?}. Prints JSON lines {event, data}; the last is
// "end": {event, payload, text, reasoning, toolCalls, lastSeq}.
import { io } from "socket.io-client";
import { RelayClient } from "../../web/js/relay.js";

const opts = JSON.parse(process.argv[2]);
const out = (event, data) => process.stdout.write(JSON.stringify({ event, data }) + "\n");
let token = opts.token;
let texts = 0;
const client = new RelayClient({
  io,
  url: opts.url,
  transports: ["websocket"],
  getToken: () => token,
  renewToken: opts.renewToken
    ? async () => {
        out("renew", null);
        token = opts.renewToken;
        return token;
      }
    : undefined,
  handlers: {
    onStatus: (s) => out("status", s),
    onRefreshed: (at) => out("refreshed", at),
    onRefused: (e) => out("refused", e),
    onProblem: (e) => out("problem", e),
    onRejoin: (room, ack) => out("rejoin", { room, ok: ack.ok }),
    onReasoning: (_s, delta) => out("reasoning", delta),
    onToolCall: (_s, call) => out("tool_call", { ...call }),
    onText: (stream, delta) => {
      out("text", delta);
      texts += 1;
      if (texts === opts.dropAfterTokens) {
        out("drop", null);
        client.socket?.io.engine.close(); // a lost transport: socket.io reconnects by itself
      }
      if (texts === opts.cancelAfterTokens) client.cancel(stream.requestId);
    },
  },
});
setTimeout(() => {
  out("probe_timeout", null);
  process.exit(3);
}, opts.timeoutMs ?? 25000);
client.connect();
const session = await new Promise((resolve) => client.socket?.once("session", resolve));
out("session", session);
if (opts.room) out("join", await client.join(opts.room));
const { stream, ack } = client.chat(opts.request);
out("ack", await ack);
const [event, payload] = await stream.ended;
out("end", {
  event,
  payload,
  text: stream.text,
  reasoning: stream.reasoning,
  toolCalls: stream.toolCalls,
  lastSeq: stream.lastSeq,
});
client.disconnect();
setTimeout(() => process.exit(0), 50);
