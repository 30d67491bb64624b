// The remote side of the benchmarks, in its own process: an HBONE server and plain mTLS servers with
// the same certificates and TLS settings. Modes: sink (count bytes, reply with the count), echo, close.
import { readFileSync } from "node:fs";
import type { Duplex } from "node:stream";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { serverTlsOptions } from "../src/credentials.js";
import { createHboneServer } from "../src/index.js";

const [keyPath, certPath, caPath] = process.argv.slice(2) as [string, string, string];
const credentials = {
  key: readFileSync(keyPath, "utf8"),
  certChain: readFileSync(certPath, "utf8"),
  trustBundle: readFileSync(caPath, "utf8"),
};

type Mode = "sink" | "echo" | "close";
const MODE_BY_PORT: Record<number, Mode> = { 1: "sink", 2: "echo", 3: "close" };

function serve(stream: Duplex, mode: Mode): void {
  stream.on("error", () => {});
  if (mode === "echo") {
    stream.on("data", (c: Buffer) => {
      if (!stream.write(c)) stream.pause();
    });
    stream.on("drain", () => stream.resume());
    stream.on("end", () => stream.end());
  } else if (mode === "sink") {
    let n = 0;
    stream.on("data", (c: Buffer) => {
      n += c.length;
    });
    stream.on("end", () => stream.end(`${n}\n`));
  } else {
    stream.resume();
    stream.on("end", () => stream.end());
  }
}

const hbone = createHboneServer({
  ...credentials,
  keepaliveIntervalMs: 0,
  onTunnel: (t) => serve(t.accept(), MODE_BY_PORT[t.authority.port] ?? "close"),
});
const hbonePort = (await hbone.listen({ port: 0, host: "127.0.0.1" })).port;

const tlsPorts: Record<string, number> = {};
for (const mode of ["sink", "echo", "close"] as const) {
  const server = createTlsServer({
    ...serverTlsOptions(credentials, {}),
    ALPNProtocols: undefined,
    allowHalfOpen: true,
  });
  server.on("secureConnection", (s: TLSSocket) => {
    s.setNoDelay(true);
    serve(s, mode);
  });
  server.on("tlsClientError", () => {});
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  tlsPorts[mode] = (server.address() as { port: number }).port;
}

process.stdout.write(`${JSON.stringify({ hbonePort, tlsPorts })}\n`);
process.stdin.setEncoding("utf8");
// Exit with the parent, even if it crashed.
process.stdin.once("end", () => process.exit(0));
process.stdin.on("data", (line: string) => {
  if (line.trim() === "rss")
    process.stdout.write(
      `${JSON.stringify({ rss: process.memoryUsage().rss, tunnels: hbone.stats().tunnels })}\n`,
    );
  if (line.trim() === "exit") process.exit(0);
});
