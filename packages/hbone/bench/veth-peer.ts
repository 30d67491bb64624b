// The server side of the veth bench (veth-bench.ts), run inside the server namespace: an HBONE server
// and a plain mutual-TLS server with the same certificates, both counting what they receive and
// answering the count when the sender ends. Usage: veth-peer.ts <key> <cert> <ca> <host>
// [<stream window MiB> <connection window MiB>] (the package defaults when left out); prints
// {"hbonePort":n,"tlsPort":n} once listening, exits when stdin closes.
import { readFileSync } from "node:fs";
import type { Duplex } from "node:stream";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { serverTlsOptions } from "../src/credentials.js";
import { createHboneServer } from "../src/index.js";

const [keyPath, certPath, caPath, host, streamMiB, connectionMiB] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  string | undefined,
  string | undefined,
];
const MiB = 1024 * 1024;
const windows = {
  ...(streamMiB ? { streamWindowBytes: Number(streamMiB) * MiB } : {}),
  ...(connectionMiB ? { connectionWindowBytes: Number(connectionMiB) * MiB } : {}),
};
const credentials = {
  key: readFileSync(keyPath, "utf8"),
  certChain: readFileSync(certPath, "utf8"),
  trustBundle: readFileSync(caPath, "utf8"),
};

/** Counts bytes until the sender ends, then answers the count and ends. */
function sink(stream: Duplex): void {
  let n = 0;
  stream.on("error", () => {});
  stream.on("data", (c: Buffer) => {
    n += c.length;
  });
  stream.on("end", () => stream.end(`${n}\n`));
}

const hbone = createHboneServer({
  ...credentials,
  ...windows,
  keepaliveIntervalMs: 0,
  onTunnel: (t) => sink(t.accept()),
});
const hbonePort = (await hbone.listen({ port: 0, host })).port;

const tls = createTlsServer({
  ...serverTlsOptions(credentials, {}),
  ALPNProtocols: undefined,
  allowHalfOpen: true,
});
tls.on("secureConnection", (s: TLSSocket) => {
  s.setNoDelay(true);
  sink(s);
});
tls.on("tlsClientError", () => {});
await new Promise<void>((r) => tls.listen(0, host, r));
const tlsPort = (tls.address() as { port: number }).port;

process.stdout.write(`${JSON.stringify({ hbonePort, tlsPort })}\n`);
process.stdin.resume();
process.stdin.once("end", () => process.exit(0));
