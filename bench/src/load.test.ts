// The tunnels case leaves no port behind: after holdTunnels, none of the ports its connections bound on
// the client address sits in TIME_WAIT, where it would be kept from the next pair's unbound connects.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { test } from "node:test";
import { holdTunnels } from "./load.js";

/** TCP sockets in TIME_WAIT whose local address is `ip` (`ss` from iproute2). */
function timeWaitFrom(ip: string): number {
  const out = execFileSync("ss", ["-Htan", "state", "time-wait", "src", ip], { encoding: "utf8" });
  return out.split("\n").filter((line) => line.trim() !== "").length;
}

test("holdTunnels leaves none of its client ports in TIME_WAIT", async () => {
  // Addresses of its own, clear of a bench run (127.77) and of the harness test (127.180-249).
  const net = `127.${100 + Math.floor(Math.random() * 70)}.${Math.floor(Math.random() * 250)}`;
  const [clientIp, serverIp] = [`${net}.1`, `${net}.2`];
  const accepted = new Set<Socket>();
  const echo = createServer((socket) => {
    accepted.add(socket);
    socket.on("error", () => {});
    socket.once("close", () => accepted.delete(socket));
    socket.pipe(socket);
  });
  echo.listen(0, serverIp);
  await once(echo, "listening");
  try {
    const { port } = echo.address() as AddressInfo;
    let openWhileHeld = 0;
    const held = await holdTunnels(
      { host: serverIp, port, localAddress: clientIp },
      200,
      async () => {
        openWhileHeld = accepted.size;
      },
      { concurrency: 20, deadlineMs: 30_000 },
    );
    assert.equal(held.opened, 200);
    assert.equal(held.failed, 0);
    assert.equal(openWhileHeld, 200);
    // The server side sees every connection end.
    const deadline = Date.now() + 10_000;
    while (accepted.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(accepted.size, 0, "every connection closed on the server side");
    assert.equal(timeWaitFrom(clientIp), 0, `TIME_WAIT on ${clientIp}`);
  } finally {
    for (const socket of accepted) socket.destroy();
    echo.close();
  }
});
