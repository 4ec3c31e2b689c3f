// Test probe for rooms: the official socket.io-client joins a room, optionally chats in it
// once the join is acknowledged, and prints every event as one JSON line {"event", "data"}.
// argv[2]: JSON {url, token, room, chat?: ChatRequest, until: request_id, transports?, timeoutMs?}
import { io } from "socket.io-client";

const opts = JSON.parse(process.argv[2]);
const out = (event, data) => process.stdout.write(JSON.stringify({ event, data }) + "\n");
const socket = io(opts.url, {
  auth: { token: opts.token },
  transports: opts.transports ?? ["websocket"],
  reconnection: false,
});
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
  if ((event === "done" || event === "error") && data.request_id === opts.until) finish();
});
socket.on("connect", () => {
  socket.emit("join", { room: opts.room }, (ack) => {
    out("join_ack", ack);
    if (!ack.ok) return finish();
    if (opts.chat) socket.emit("chat", opts.chat, (chatAck) => out("chat_ack", chatAck));
  });
});
setTimeout(() => {
  out("probe_timeout", null);
  process.exit(3);
}, opts.timeoutMs ?? 20000);
