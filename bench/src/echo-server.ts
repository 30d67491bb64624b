/**
 * The backend "pod" app for latency and tunnel counts: echoes every byte back on the same connection.
 * Usage: node --import tsx echo-server.ts <host> <port>; prints "ready" once listening.
 */
import { createServer } from "node:net";

const [host = "127.0.0.1", port = "0"] = process.argv.slice(2);
const server = createServer((socket) => {
  socket.setNoDelay(true);
  socket.on("error", () => socket.destroy());
  socket.pipe(socket);
});
server.maxConnections = 100_000;
server.listen(Number(port), host, () => console.log("ready"));
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(0));
