import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  addressRecord,
  createDnsServer,
  type DnsServer,
  RecordType,
  ResponseCode,
  replyTo,
} from "@ambient/dns";
import { ZtunnelError } from "./errors.js";
import { createHostnameResolver } from "./hostname-endpoints.js";

describe("createHostnameResolver", () => {
  let upstream: DnsServer;
  let address = { address: "127.0.0.1", port: 0 };
  const asked: string[] = [];
  // name -> [addresses, ttl]
  const zone = new Map<string, [string[], number]>([
    ["two.example.test", [["192.0.2.1", "192.0.2.2"], 30]],
    ["short.example.test", [["192.0.2.3"], 1]],
  ]);

  before(async () => {
    upstream = createDnsServer({
      handler: async ({ message }) => {
        const q = message.questions[0];
        asked.push(`${q?.name}/${q?.type}`);
        // A slow answer, so concurrent lookups overlap.
        await new Promise((r) => setTimeout(r, 50));
        const entry = zone.get(q?.name.toLowerCase() ?? "");
        if (entry === undefined || q?.type !== RecordType.A) {
          return replyTo(message, {
            rcode: entry === undefined ? ResponseCode.NXDOMAIN : 0,
            authoritative: true,
          });
        }
        const [ips, ttl] = entry;
        return replyTo(message, {
          authoritative: true,
          answers: ips.map((ip) => addressRecord(q.name, ip, ttl)),
        });
      },
    });
    const bound = await upstream.listen({ host: "127.0.0.1", port: 0 });
    address = { address: "127.0.0.1", port: bound.port };
  });
  after(() => upstream.close());

  it("asks once per TTL, and takes the answer's addresses in turn", async () => {
    asked.length = 0;
    const resolve = createHostnameResolver({ nameservers: [address] });
    const got = [];
    for (let i = 0; i < 4; i++) got.push(await resolve("two.example.test"));
    assert.deepEqual(got, ["192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.2"]);
    assert.deepEqual(asked, ["two.example.test/1"]);
  });

  it("shares one query between concurrent lookups, and asks again once the TTL is over", async () => {
    asked.length = 0;
    const resolve = createHostnameResolver({ nameservers: [address] });
    const both = await Promise.all([resolve("short.example.test"), resolve("short.example.test")]);
    assert.deepEqual(both, ["192.0.2.3", "192.0.2.3"]);
    assert.equal(asked.length, 1);
    await new Promise((r) => setTimeout(r, 1100));
    await resolve("short.example.test");
    assert.equal(asked.length, 2, "the 1 s TTL ran out");
  });

  it("rejects a name without an address with ERR_ZTUNNEL_RESOLVE, and does not keep the failure", async () => {
    const resolve = createHostnameResolver({ nameservers: [address] });
    for (let i = 0; i < 2; i++) {
      await assert.rejects(
        resolve("missing.example.test"),
        (err: unknown) => err instanceof ZtunnelError && err.code === "ERR_ZTUNNEL_RESOLVE",
      );
    }
    zone.set("missing.example.test", [["192.0.2.9"], 30]);
    assert.equal(await resolve("missing.example.test"), "192.0.2.9");
  });

  it("answers localhost and the names under it with the loopback address, asking no one", async () => {
    asked.length = 0;
    const resolve = createHostnameResolver({ nameservers: [address] });
    for (const name of ["localhost", "LOCALHOST.", "api.localhost"])
      assert.equal(await resolve(name), "127.0.0.1");
    assert.deepEqual(asked, []);
    await assert.rejects(resolve("localhost.example.test"), /cannot resolve/);
  });
});
