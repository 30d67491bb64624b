/**
 * The HTTP backend of the waypoint bench: reads each request body and answers 200 with a 1 KiB body,
 * on HTTP/1.1 keep-alive. Usage: node --import tsx waypoint-backend.ts <host> <port>; prints "ready".
 */
import { createServer } from "node:http";

const body = Buffer.alloc(1024, 0x61);
const server = createServer((req, res) => {
  req.on("data", () => {});
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": body.length });
    res.end(body);
  });
});
server.keepAliveTimeout = 120_000;
server.listen(Number(process.argv[3]), process.argv[2], () => console.log("ready"));
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(0));
