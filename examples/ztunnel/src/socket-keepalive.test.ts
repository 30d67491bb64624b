import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { after, describe, it } from "node:test";
import type { Workload } from "@ambient/xds";
import { passthroughSocks5, socksConnect } from "../test/fixtures.js";
import { createHostNetwork } from "./outbound.js";
import { SOCKS5_REPLY } from "./socks5.js";

const client = {
  uid: "Kubernetes//Pod/default/sleep",
  name: "sleep",
  namespace: "default",
  addresses: [Uint8Array.from([127, 0, 0, 1])],
  serviceAccount: "sleep",
  tunnelProtocol: "HBONE",
  services: {},
  status: "HEALTHY",
} as unknown as Workload;

/**
 * The TCP sockets of this host with a local port `localPort` (or a remote port `remotePort`), each
 * with the timer `ss -o` shows for it: `keepalive 2min` or `keepalive 3min` (the time left before the
 * first probe, in whole minutes) once keepalive is on and nothing is in flight, `none` without one.
 */
function socketTimers(filter: { localPort: number } | { remotePort: number }): string[] {
  const expression = "localPort" in filter ? `sport = :${filter.localPort}` : `dport = :${filter.remotePort}`;
  const out = execFileSync("ss", ["-tnoH", "state", "established", expression], { encoding: "utf8" });
  return out
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => {
      const timer = /timer:\((\w+),(?:(\d+)min)?/.exec(line);
      if (timer === null) return "none";
      return timer[1] === "keepalive" ? `keepalive ${timer[2] ?? 0}min` : (timer[1] as string);
    });
}

/** {@link socketTimers} once no socket has bytes in flight (a retransmission timer, `on`), within 2 s. */
async function settledTimers(filter: { localPort: number } | { remotePort: number }): Promise<string[]> {
  for (let waited = 0; ; waited += 50) {
    const timers = socketTimers(filter);
    if (!timers.includes("on") || waited >= 2000) return timers;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A keepalive timer that fires within 180 s (ztunnel's idle time), not after the kernel's 2 h. */
const PROXY_KEEPALIVE = /^keepalive [23]min$/;

describe("TCP keepalive on the sockets the proxy accepts and dials", () => {
  const servers: Server[] = [];
  const sockets: Socket[] = [];
  after(async () => {
    for (const s of sockets) s.destroy();
    for (const s of servers) await new Promise<void>((resolve) => s.close(() => resolve()));
  });

  async function listen(server: Server): Promise<number> {
    servers.push(server);
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return (server.address() as AddressInfo).port;
  }

  it("turns keepalive on for a SOCKS5 client's socket and for the passthrough dial, after 180 s idle", async () => {
    // A destination outside the mesh, which turns nothing on for the sockets it accepts.
    const destination = createServer((s) => {
      sockets.push(s);
      s.pipe(s);
    });
    const destinationPort = await listen(destination);
    const network = createHostNetwork({
      createClient: () => {
        throw new Error("no HBONE here");
      },
    });
    const { server, handler } = passthroughSocks5({ network, source: client });
    const socksPort = await listen(server);
    try {
      const { socket, reply } = await socksConnect(
        `127.0.0.1:${socksPort}`,
        "127.0.0.1",
        "127.0.0.1",
        destinationPort,
      );
      sockets.push(socket);
      assert.equal(reply, SOCKS5_REPLY.succeeded);
      socket.write("ping");
      await once(socket, "data");
      // The proxy's side of the client's connection, and its own connection to the destination.
      const accepted = await settledTimers({ localPort: socksPort });
      assert.equal(accepted.length, 1);
      assert.match(accepted[0] as string, PROXY_KEEPALIVE);
      // The only socket to the destination's port is the proxy's dial: the client went through it.
      const dialed = await settledTimers({ remotePort: destinationPort });
      assert.equal(dialed.length, 1);
      assert.match(dialed[0] as string, PROXY_KEEPALIVE);
      // Neither the test's client nor the destination turned it on: only the proxy's sockets have it.
      assert.deepEqual(await settledTimers({ remotePort: socksPort }), ["none"]);
      assert.deepEqual(await settledTimers({ localPort: destinationPort }), ["none"]);
    } finally {
      handler.destroyAll();
    }
  });
});
