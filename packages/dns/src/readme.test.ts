// Runs README.md's example (keep them in sync) against dnsmasq as the node's resolver: the
// resolv.conf path, the nameservers' port and the listen port are the only changes.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { dig, hasDig } from "../test/dig.js";
import { hasDnsmasq, startDnsmasq } from "../test/dnsmasq.js";
import {
  addressRecord,
  createDnsForwarder,
  createDnsServer,
  RecordType,
  ResponseCode,
  readResolvConf,
  replyTo,
} from "./index.js";

const missing = !hasDig ? "dig is not installed" : !hasDnsmasq ? "dnsmasq is not installed" : false;

describe("README", () => {
  it("example: a DNS proxy answers mesh names and forwards the rest", { skip: missing }, async () => {
    const dnsmasq = await startDnsmasq();
    const dir = mkdtempSync(join(tmpdir(), "ambient-dns-readme-"));
    const resolvConf = join(dir, "resolv.conf");
    writeFileSync(resolvConf, "nameserver 127.0.0.1\nsearch cluster.local\n");
    try {
      // --- README ---
      const meshAddresses = new Map([["reviews.bookinfo.mesh.test", "10.0.0.7"]]);
      const { nameservers } = await readResolvConf(resolvConf); // /etc/resolv.conf
      const upstream = createDnsForwarder({
        nameservers: nameservers.map((address) => ({ address, port: dnsmasq.port })),
      });

      const proxy = createDnsServer({
        handler: ({ message, bytes }) => {
          const { name, type } = message.questions[0]!; // the server only passes on queries with one question
          const key = name.toLowerCase();
          if (!key.endsWith(".mesh.test")) return upstream.forward(bytes); // not ours: ask upstream
          const ip = meshAddresses.get(key);
          if (ip === undefined)
            return replyTo(message, { rcode: ResponseCode.NXDOMAIN, authoritative: true });
          const answers = type === RecordType.A ? [addressRecord(name, ip, 30)] : [];
          return replyTo(message, { authoritative: true, answers });
        },
      });
      const { port } = await proxy.listen({ host: "127.0.0.1", port: 0 });
      // --- end ---

      try {
        const mesh = await dig(port, ["Reviews.Bookinfo.mesh.test", "A"]);
        assert.deepEqual([mesh.status, mesh.answers], ["NOERROR", ["10.0.0.7"]]);
        assert.ok(mesh.flags.includes("aa"));
        const noData = await dig(port, ["+tcp", "reviews.bookinfo.mesh.test", "AAAA"]);
        assert.deepEqual([noData.status, noData.answers], ["NOERROR", []]);
        assert.equal((await dig(port, ["ratings.bookinfo.mesh.test"])).status, "NXDOMAIN");
        const forwarded = await dig(port, ["www.example.test", "A"]);
        assert.deepEqual([forwarded.status, forwarded.answers], ["NOERROR", ["192.0.2.7"]]);
        assert.equal((await dig(port, ["+tcp", "gone.nx.test"])).status, "NXDOMAIN");
      } finally {
        await proxy.close();
        upstream.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await dnsmasq.stop();
    }
  });
});
