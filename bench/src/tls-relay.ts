/**
 * The minimal Node TLS relay pair, the "what Node itself costs" baseline: the `out` side takes
 * plaintext and opens one mutual TLS 1.3 connection per client connection to the `in` side, which
 * relays to the backend. No HTTP/2, no policy, no metrics: a socket, a TLS socket and two pipes.
 * Usage: node --import tsx tls-relay.ts <config.json>, where the file holds a {@link RelayConfig};
 * prints "ready" once every listener is up.
 */
import { readFileSync } from "node:fs";
import { createServer as createTcpServer, type Socket, connect as tcpConnect } from "node:net";
import { createServer as createTlsServer, connect as tlsConnect } from "node:tls";

/** What one relay process does. */
export interface RelayConfig {
  mode: "out" | "in";
  /** Listeners and where each one relays to. */
  routes: { listenHost: string; listenPort: number; toHost: string; toPort: number }[];
  certFile: string;
  keyFile: string;
  caFile: string;
}

function relay(a: Socket, b: Socket): void {
  const close = () => {
    a.destroy();
    b.destroy();
  };
  a.on("error", close).on("close", close);
  b.on("error", close).on("close", close);
  a.pipe(b);
  b.pipe(a);
}

const config = JSON.parse(readFileSync(process.argv[2] ?? "", "utf8")) as RelayConfig;
const tlsOptions = {
  cert: readFileSync(config.certFile),
  key: readFileSync(config.keyFile),
  ca: readFileSync(config.caFile),
  minVersion: "TLSv1.3" as const,
};
let listening = 0;
const onListening = () => {
  listening += 1;
  if (listening === config.routes.length) console.log("ready");
};

for (const route of config.routes) {
  if (config.mode === "out") {
    const server = createTcpServer({ pauseOnConnect: true }, (client) => {
      client.setNoDelay(true);
      const upstream = tlsConnect({
        ...tlsOptions,
        host: route.toHost,
        port: route.toPort,
        // SPIFFE certificates name a URI, not a host: the chain is verified, the name is not.
        checkServerIdentity: () => undefined,
      });
      upstream.setNoDelay(true);
      relay(client, upstream);
      client.resume();
    });
    server.maxConnections = 100_000;
    server.listen(route.listenPort, route.listenHost, onListening);
  } else {
    const server = createTlsServer(
      { ...tlsOptions, requestCert: true, rejectUnauthorized: true },
      (client) => {
        client.setNoDelay(true);
        const upstream = tcpConnect({ host: route.toHost, port: route.toPort });
        upstream.setNoDelay(true);
        relay(client, upstream);
      },
    );
    server.maxConnections = 100_000;
    server.listen(route.listenPort, route.listenHost, onListening);
  }
}
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(0));
