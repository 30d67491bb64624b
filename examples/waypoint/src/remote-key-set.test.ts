import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { exportJWK, generateKeyPair, jwtVerify, SignJWT } from "jose";
import { JWKS_UNAVAILABLE, remoteKeySet } from "./remote-key-set.js";

describe("remoteKeySet", async () => {
  const a = await generateKeyPair("ES256");
  const b = await generateKeyPair("ES256");
  const jwk = async (pair: typeof a, kid: string) => ({
    ...(await exportJWK(pair.publicKey)),
    kid,
    alg: "ES256",
  });
  const setA = JSON.stringify({ keys: [await jwk(a, "a")] });
  const setAB = JSON.stringify({ keys: [await jwk(a, "a"), await jwk(b, "b")] });
  const sign = (pair: typeof a, kid: string) =>
    new SignJWT({ iss: "https://iss", sub: "u" })
      .setProtectedHeader({ alg: "ES256", kid })
      .setExpirationTime("5m")
      .sign(pair.privateKey);
  const tokenA = await sign(a, "a");
  const tokenB = await sign(b, "b");

  /** What the issuer answers next; every request is counted. */
  let answer: (res: ServerResponse) => void = (res) => res.end(setA);
  let requests = 0;
  const server = createServer((_req, res) => {
    requests++;
    answer(res);
  });
  let url: URL;
  before(async () => {
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/keys`);
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });
  const failing = (res: ServerResponse) => {
    res.statusCode = 500;
    res.end("down");
  };
  const clock = () => {
    let t = 1_000_000;
    return {
      now: () => t,
      advance: (ms: number) => {
        t += ms;
      },
    };
  };
  const verify = (keys: Parameters<typeof jwtVerify>[1], token: string) =>
    jwtVerify(token, keys).then(
      () => "ok",
      (err: { code?: string }) => err.code ?? "error",
    );

  it("fetches once and verifies from the set it holds", async () => {
    answer = (res) => res.end(setA);
    requests = 0;
    const keys = remoteKeySet(url, { timeoutMs: 2000 });
    assert.equal(await verify(keys, tokenA), "ok");
    assert.equal(await verify(keys, tokenA), "ok");
    assert.equal(requests, 1);
    assert.equal(keys.hasKeys, true);
  });

  it("shares one fetch between concurrent tokens", async () => {
    answer = (res) => setTimeout(() => res.end(setA), 50);
    requests = 0;
    const keys = remoteKeySet(url, { timeoutMs: 2000 });
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => verify(keys, tokenA)));
    assert.deepEqual(new Set(outcomes), new Set(["ok"]));
    assert.equal(requests, 1);
  });

  it("after a failed fetch, refuses tokens without fetching until the backoff is over, doubling it", async () => {
    answer = failing;
    requests = 0;
    const c = clock();
    const keys = remoteKeySet(url, { timeoutMs: 2000, now: c.now });
    for (let i = 0; i < 50; i++) assert.equal(await verify(keys, tokenA), JWKS_UNAVAILABLE);
    assert.equal(requests, 1, "one fetch for 50 tokens within the first second");
    assert.match(String(keys.lastError?.message), /HTTP 500/);
    c.advance(1000);
    assert.equal(await verify(keys, tokenA), JWKS_UNAVAILABLE);
    assert.equal(requests, 2);
    c.advance(1000);
    assert.equal(await verify(keys, tokenA), JWKS_UNAVAILABLE);
    assert.equal(requests, 2, "the second failure waits 2 s");
    c.advance(1000);
    answer = (res) => res.end(setA);
    assert.equal(await verify(keys, tokenA), "ok");
    assert.equal(requests, 3);
    assert.equal(keys.lastError, undefined);
  });

  it("backs off at most maxBackoffMs", async () => {
    answer = failing;
    requests = 0;
    const c = clock();
    const keys = remoteKeySet(url, { timeoutMs: 2000, now: c.now, backoffMs: 100, maxBackoffMs: 300 });
    for (let i = 0; i < 6; i++) {
      await verify(keys, tokenA);
      c.advance(300);
    }
    assert.equal(requests, 6);
  });

  it("keeps the last good set when a refresh fails, and retries the refresh after the backoff", async () => {
    answer = (res) => res.end(setA);
    requests = 0;
    const c = clock();
    const keys = remoteKeySet(url, { timeoutMs: 2000, now: c.now, refreshMs: 60_000 });
    assert.equal(await verify(keys, tokenA), "ok");
    c.advance(60_000);
    answer = failing;
    assert.equal(await verify(keys, tokenA), "ok", "the issuer being down does not refuse known keys");
    assert.equal(requests, 2);
    assert.equal(await verify(keys, tokenA), "ok");
    assert.equal(requests, 2, "no fetch during the backoff");
    c.advance(1000);
    answer = (res) => res.end(setAB);
    assert.equal(await verify(keys, tokenA), "ok");
    assert.equal(requests, 3);
    assert.equal(await verify(keys, tokenB), "ok", "the refreshed set is used");
  });

  it("fetches again for a key it lacks, at most once per cooldown", async () => {
    answer = (res) => res.end(setA);
    requests = 0;
    const c = clock();
    const keys = remoteKeySet(url, { timeoutMs: 2000, now: c.now, cooldownMs: 30_000 });
    assert.equal(await verify(keys, tokenA), "ok");
    assert.equal(await verify(keys, tokenB), "ERR_JWKS_NO_MATCHING_KEY");
    assert.equal(requests, 1, "within the cooldown of the first fetch");
    c.advance(30_000);
    answer = (res) => res.end(setAB);
    assert.equal(await verify(keys, tokenB), "ok", "the rotated-in key is found");
    assert.equal(requests, 2);
    const stranger = await sign(await generateKeyPair("ES256"), "c");
    for (let i = 0; i < 10; i++) assert.equal(await verify(keys, stranger), "ERR_JWKS_NO_MATCHING_KEY");
    assert.equal(requests, 2, "unknown kids do not make it fetch again within the cooldown");
  });

  it("refuses a set that is too large, not JSON, without keys, or late", async () => {
    const cases: [string, (res: ServerResponse) => void, RegExp][] = [
      [
        "too large",
        (res) => res.end(JSON.stringify({ keys: [], pad: "x".repeat(5000) })),
        /larger than 4096/,
      ],
      ["not JSON", (res) => res.end("<html>"), /not JSON/],
      ["no keys", (res) => res.end("{}"), /no "keys" list/],
      ["late", (res) => setTimeout(() => res.end(setA), 1000), /abort|timeout/i],
    ];
    for (const [name, respond, message] of cases) {
      answer = respond;
      const keys = remoteKeySet(url, { timeoutMs: 200, maxBytes: 4096 });
      assert.equal(await verify(keys, tokenA), JWKS_UNAVAILABLE, name);
      assert.match(String(keys.lastError?.message ?? keys.lastError?.name), message, name);
    }
  });
});
