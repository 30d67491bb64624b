/**
 * The two ends of the waypoint bench's HBONE path, in one small process each, standing in for the
 * ztunnels on either side of the waypoint so that only the waypoint is measured and both ends cost
 * the same in the haproxy run (where `tls-relay.ts` plays them with plain mutual TLS):
 * - `out`: plaintext TCP in (h2load), one HBONE tunnel per connection to the waypoint, `:authority`
 *   the Service VIP:port, as the client's ztunnel sends it; all tunnels share the client's pool.
 * - `in`: HBONE server on the server pod's IP :15008, where the waypoint sends each request; every
 *   tunnel goes to its `:authority` over local TCP, as the server's ztunnel delivers to the pod.
 * Usage: node --import tsx waypoint-hbone-shim.ts <config.json> ({@link HboneShimConfig}); prints
 * "ready" once it listens.
 */
import { readFileSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { createHboneClient, createHboneServer, pipeTunnel } from "@ambient/hbone";

/** What one shim process does. */
export interface HboneShimConfig {
  mode: "out" | "in";
  listenHost: string;
  listenPort: number;
  /** `out`: the waypoint's HBONE address, the authority to ask for and the waypoint's identity. */
  waypoint?: { address: string; authority: string; identity: string };
  /** `out`: the client pod's IP, the source of every HBONE connection. */
  sourceAddress?: string;
  certFile: string;
  keyFile: string;
  caFile: string;
}

const config = JSON.parse(readFileSync(process.argv[2] ?? "", "utf8")) as HboneShimConfig;
const credentials = {
  key: readFileSync(config.keyFile, "utf8"),
  certChain: readFileSync(config.certFile, "utf8"),
  trustBundle: readFileSync(config.caFile, "utf8"),
};

if (config.mode === "out") {
  const waypoint = config.waypoint;
  if (waypoint === undefined) throw new Error("out mode needs the waypoint");
  const client = createHboneClient(credentials);
  const server = createServer({ pauseOnConnect: true }, (socket) => {
    socket.setNoDelay(true);
    socket.on("error", () => socket.destroy());
    client
      .connect({
        address: waypoint.address,
        authority: waypoint.authority,
        expectedIdentities: [waypoint.identity],
        ...(config.sourceAddress === undefined ? {} : { sourceAddress: config.sourceAddress }),
      })
      .then((tunnel) => {
        socket.resume();
        return pipeTunnel(socket, tunnel);
      })
      .catch((err: Error) => {
        console.error(`tunnel to ${waypoint.authority} failed: ${err.message}`);
        socket.destroy();
      });
  });
  server.maxConnections = 100_000;
  server.listen(config.listenPort, config.listenHost, () => console.log("ready"));
} else {
  const server = createHboneServer({
    ...credentials,
    onTunnel: (tunnel) => {
      const upstream = tcpConnect({
        host: tunnel.authority.host,
        port: tunnel.authority.port,
        allowHalfOpen: true,
      });
      upstream.setNoDelay(true);
      upstream.once("connect", () => pipeTunnel(tunnel.accept(), upstream).catch(() => {}));
      upstream.once("error", () => {
        if (tunnel.state === "pending") tunnel.refuse(503);
      });
    },
  });
  await server.listen({ host: config.listenHost, port: config.listenPort });
  console.log("ready");
}
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(0));
