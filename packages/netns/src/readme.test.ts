// Runs README.md's two examples (keep them in sync) inside a namespace the test creates; the pod
// path and the ZDS socket path are the only changes.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import type net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createTestNetns, needsIptables, once } from "../test/netns-fixture.js";
import { connectFromNetns, getOriginalDestination, listenInNetns, openNetns } from "./index.js";
import { createZdsClient, createZdsServer } from "./zds/index.js";

describe("README", () => {
  it(
    "example: a captured connection is sent on to its original destination",
    { skip: needsIptables },
    async () => {
      const ns = createTestNetns();
      try {
        // An app server inside the pod, and the capture rule istio-cni would install.
        const app = openNetns(ns.path);
        const echo = await listenInNetns(app, { host: "127.0.0.9", port: 80 });
        echo.on("connection", (s: net.Socket) => s.pipe(s));
        ns.exec("iptables", [
          "-t",
          "nat",
          "-A",
          "OUTPUT",
          "-p",
          "tcp",
          "-d",
          "127.0.0.9",
          "-m",
          "mark",
          "!",
          "--mark",
          "0x539",
          "-j",
          "REDIRECT",
          "--to-ports",
          "15001",
        ]);

        // --- README ---
        const pod = openNetns(ns.path); // or /proc/<pid>/ns/net
        const outbound = await listenInNetns(pod, { host: "127.0.0.1", port: 15001, mark: 0x539 });
        outbound.on("connection", (app) => {
          const dst = getOriginalDestination(app); // where the app was going before iptables REDIRECT
          const upstream = connectFromNetns(pod, { host: dst.address, port: dst.port, mark: 0x539 });
          app.pipe(upstream).pipe(app);
        });
        // --- end ---

        const proxied = once<net.Socket>(outbound, "connection");
        const client = connectFromNetns(app, { host: "127.0.0.9", port: 80 });
        await proxied;
        client.write("through the proxy");
        let text = "";
        client.setEncoding("utf8");
        await new Promise<void>((resolve) =>
          client.on("data", (d: string) => {
            text += d;
            if (text.length >= "through the proxy".length) resolve();
          }),
        );
        client.destroy();
        assert.equal(text, "through the proxy");
        await Promise.all([echo, outbound].map((s) => new Promise((r) => s.close(r))));
        pod.close();
        app.close();
      } finally {
        ns.remove();
      }
    },
  );

  it("example: a ZDS client serving the pods a node agent hands over", { skip: needsIptables }, async () => {
    const ns = createTestNetns();
    const dir = mkdtempSync(join(tmpdir(), "ambient-readme-"));
    const server = createZdsServer({ path: join(dir, "ztunnel.sock") }).listen();
    try {
      await server.addWorkload({
        uid: "web-0",
        workloadInfo: { name: "web-0", namespace: "shop", serviceAccount: "web" },
        netns: openNetns(ns.path),
      });

      // --- README ---
      const proxies = new Map();
      const zds = createZdsClient({
        path: server.path,
        handler: {
          async addWorkload({ uid, netns }) {
            proxies.set(uid, await listenInNetns(netns, { host: "127.0.0.1", port: 15001, mark: 0x539 }));
            netns.close(); // the listener keeps the namespace alive
          },
          deleteWorkload(uid) {
            proxies.get(uid)?.close();
            proxies.delete(uid);
          },
        },
      });
      await zds.ready(); // the node agent's snapshot is reconciled
      // --- end ---

      assert.match(ns.exec("ss", ["-Hltn", "sport = :15001"]), /127\.0\.0\.1:15001/);
      await server.deleteWorkload("web-0");
      assert.equal(proxies.size, 0);
      zds.close();
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
      ns.remove();
    }
  });
});
