import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, connect, createServer } from "node:net";
import { describe, it } from "node:test";
import { HboneError } from "@ambient/hbone";
import {
  createDialFailureMetrics,
  errnoOf,
  socksReplyFor,
  socksReplyForErrno,
  upstreamRefusalReason,
} from "./dial-failure.js";
import { ZtunnelError } from "./errors.js";
import { SOCKS5_REPLY } from "./socks5.js";
import type { MetricLabels, MetricsSink } from "./telemetry.js";

/** A Node.js system error as `net.connect` emits it. */
function systemError(code: string): Error {
  return Object.assign(new Error(`connect ${code} 127.0.0.1:7007 - Local (0.0.0.0:0)`), {
    code,
    syscall: "connect",
  });
}

/** The error the HBONE client raises when the peer answered the CONNECT with `status` and `reason`. */
function refusal(status: number, reason?: string): HboneError {
  const text = `CONNECT refused with status ${status}${reason === undefined ? "" : ` (${reason})`}`;
  return new HboneError("ERR_HBONE_REFUSED", text, { status });
}

describe("socksReplyForErrno (RFC 1928 reply codes)", () => {
  const cases: [string | undefined, number][] = [
    ["ECONNREFUSED", SOCKS5_REPLY.connectionRefused],
    ["EHOSTUNREACH", SOCKS5_REPLY.hostUnreachable],
    ["ENOTFOUND", SOCKS5_REPLY.hostUnreachable],
    ["ENETUNREACH", SOCKS5_REPLY.networkUnreachable],
    ["ETIMEDOUT", SOCKS5_REPLY.ttlExpired],
    // No local port or address, descriptors, buffers: the proxy failed, the destination did not refuse.
    ["EADDRNOTAVAIL", SOCKS5_REPLY.generalFailure],
    ["EADDRINUSE", SOCKS5_REPLY.generalFailure],
    ["EMFILE", SOCKS5_REPLY.generalFailure],
    ["ENOBUFS", SOCKS5_REPLY.generalFailure],
    [undefined, SOCKS5_REPLY.generalFailure],
  ];
  for (const [errno, reply] of cases) {
    it(`${errno ?? "no errno"} -> ${reply}`, () => assert.equal(socksReplyForErrno(errno), reply));
  }
});

describe("socksReplyFor", () => {
  it("maps a plain TCP dial's errno", () => {
    assert.equal(socksReplyFor(systemError("ECONNREFUSED")), SOCKS5_REPLY.connectionRefused);
    assert.equal(socksReplyFor(systemError("EADDRNOTAVAIL")), SOCKS5_REPLY.generalFailure);
    assert.equal(socksReplyFor(new Error("no code")), SOCKS5_REPLY.generalFailure);
  });

  it("keeps the reply a ZtunnelError names", () => {
    const err = new ZtunnelError("ERR_SOCKS5_UNSUPPORTED", "no endpoint", {
      reply: SOCKS5_REPLY.hostUnreachable,
    });
    assert.equal(socksReplyFor(err), SOCKS5_REPLY.hostUnreachable);
  });

  it("answers a peer's refusal by what the peer said", () => {
    assert.equal(socksReplyFor(refusal(401, "denied")), SOCKS5_REPLY.notAllowed);
    assert.equal(
      socksReplyFor(refusal(503, "upstream connect failed (ECONNREFUSED)")),
      SOCKS5_REPLY.connectionRefused,
    );
    assert.equal(
      socksReplyFor(refusal(503, "upstream connect failed (EHOSTUNREACH)")),
      SOCKS5_REPLY.hostUnreachable,
    );
    // A refusal without an errno (an older peer, an unknown destination) stays "connection refused".
    assert.equal(socksReplyFor(refusal(503, "upstream unavailable")), SOCKS5_REPLY.connectionRefused);
    assert.equal(socksReplyFor(refusal(503)), SOCKS5_REPLY.connectionRefused);
  });

  it("does not call a peer that ran out of local ports 'connection refused' (the bench's reply 5)", () => {
    const err = refusal(503, "upstream connect failed (EADDRNOTAVAIL)");
    assert.equal(socksReplyFor(err), SOCKS5_REPLY.generalFailure);
    assert.equal(errnoOf(err), "EADDRNOTAVAIL");
  });

  it("reads the errno only from a 503 refusal", () => {
    assert.equal(errnoOf(refusal(400, "upstream connect failed (EADDRNOTAVAIL)")), undefined);
    assert.equal(
      socksReplyFor(refusal(400, "upstream connect failed (EADDRNOTAVAIL)")),
      SOCKS5_REPLY.connectionRefused,
    );
  });

  it("maps a failed connection to the peer's HBONE port", () => {
    const dial = (nodeCode: string) =>
      new HboneError("ERR_HBONE_CONNECTION", `dial: connect ${nodeCode}`, { nodeCode });
    assert.equal(socksReplyFor(dial("ECONNREFUSED")), SOCKS5_REPLY.hostUnreachable);
    assert.equal(socksReplyFor(dial("EHOSTUNREACH")), SOCKS5_REPLY.hostUnreachable);
    assert.equal(socksReplyFor(dial("ENETUNREACH")), SOCKS5_REPLY.networkUnreachable);
    assert.equal(socksReplyFor(dial("EADDRNOTAVAIL")), SOCKS5_REPLY.generalFailure);
    assert.equal(socksReplyFor(dial("EMFILE")), SOCKS5_REPLY.generalFailure);
    assert.equal(
      socksReplyFor(new HboneError("ERR_HBONE_TIMEOUT", "no CONNECT response")),
      SOCKS5_REPLY.ttlExpired,
    );
    assert.equal(socksReplyFor(new HboneError("ERR_HBONE_RESET", "reset")), SOCKS5_REPLY.hostUnreachable);
  });

  it("maps the errno of a real refused connect on the loopback", async () => {
    const server = createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    await new Promise((done) => server.close(done));
    const socket = connect({ host: "127.0.0.1", port });
    const [err] = (await once(socket, "error")) as [Error];
    assert.equal(errnoOf(err), "ECONNREFUSED");
    assert.equal(socksReplyFor(err), SOCKS5_REPLY.connectionRefused);
  });
});

describe("upstreamRefusalReason", () => {
  it("names the errno and nothing else", () => {
    assert.equal(
      upstreamRefusalReason(systemError("EADDRNOTAVAIL")),
      "upstream connect failed (EADDRNOTAVAIL)",
    );
    assert.equal(upstreamRefusalReason(new Error("secret detail")), "upstream connect failed");
  });

  it("passes on only what looks like an errno", () => {
    const odd = Object.assign(new Error("x"), { code: "ERR_SOCKET_CLOSED" });
    assert.equal(upstreamRefusalReason(odd), "upstream connect failed");
    const injected = Object.assign(new Error("x"), { code: "EX)\r\nx-evil: 1" });
    assert.equal(upstreamRefusalReason(injected), "upstream connect failed");
  });

  it("round-trips through the peer's refusal", () => {
    const reason = upstreamRefusalReason(systemError("ENETUNREACH"));
    assert.equal(socksReplyFor(refusal(503, reason)), SOCKS5_REPLY.networkUnreachable);
  });
});

describe("createDialFailureMetrics", () => {
  it("counts failures by direction and errno", () => {
    const seen: { name: string; labels: MetricLabels | undefined }[] = [];
    const sink: MetricsSink = {
      counter: (name) => ({ inc: (labels) => void seen.push({ name, labels }) }),
      gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
      histogram: () => ({ observe: () => {} }),
    };
    const metrics = createDialFailureMetrics(sink);
    assert.equal(metrics.record("inbound", systemError("EADDRNOTAVAIL")), "EADDRNOTAVAIL");
    assert.equal(
      metrics.record("outbound", refusal(503, "upstream connect failed (ECONNREFUSED)")),
      "ECONNREFUSED",
    );
    assert.equal(metrics.record("outbound", new Error("policy")), "unknown");
    // A made-up errno from a peer is logged as it came but counted as "other".
    assert.equal(metrics.record("outbound", refusal(503, "upstream connect failed (EMADEUP7)")), "EMADEUP7");
    assert.deepEqual(seen, [
      { name: "ztunnel_connect_failures_total", labels: { direction: "inbound", errno: "EADDRNOTAVAIL" } },
      { name: "ztunnel_connect_failures_total", labels: { direction: "outbound", errno: "ECONNREFUSED" } },
      { name: "ztunnel_connect_failures_total", labels: { direction: "outbound", errno: "unknown" } },
      { name: "ztunnel_connect_failures_total", labels: { direction: "outbound", errno: "other" } },
    ]);
  });
});
