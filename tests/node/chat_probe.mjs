// Test probe: the official socket.io-client, driven by a JSON script on argv.
// Prints every received event as one JSON line: {"event": ..., "data": ...}.
// argv[2]: JSON {url, token, chats: [ChatRequest], cancelAfterTokens?: n, disconnectAfterTokens?: n,
//                transports?: [...], extraHeaders?: {...}}
import { io } from "socket.io-client";

const opts = JSON.parse(process.argv[2]);
const out = (event, data) => process.stdout.write(JSON.stringify({ event, data }) + "\n");
const socket = io(opts.url, {
  auth: opts.token ? { token: opts.token } : undefined,
  transports: opts.transports ?? ["websocket"],
  extraHeaders: opts.extraHeaders,
  reconnection: false,
});
let pending = opts.chats.length;
let tokens = 0;
const finish = () => {
  socket.disconnect();
  setTimeout(() => process.exit(0), 50);
};
socket.on("connect_error", (err) => {
  out("connect_error", { message: err.message, data: err.data ?? null });
  process.exit(0);
});
socket.onAny((event, data) => {
  out(event, data);
  if (event === "token") {
    tokens += 1;
    if (opts.cancelAfterTokens && tokens === opts.cancelAfterTokens) {
      socket.emit("cancel", { request_id: data.request_id }, (ack) => out("cancel_ack", ack));
    }
    if (opts.disconnectAfterTokens && tokens === opts.disconnectAfterTokens) {
      out("client_disconnect", null);
      finish();
    }
  }
  if ((event === "done" || event === "error") && data.request_id) {
    pending -= 1;
    if (pending === 0) finish();
  }
});
socket.on("connect", () => {
  for (const chat of opts.chats) {
    socket.emit("chat", chat, (ack) => out("chat_ack", ack));
  }
});
setTimeout(() => {
  out("probe_timeout", null);
  process.exit(3);
}, opts.timeoutMs ?? 20000);
