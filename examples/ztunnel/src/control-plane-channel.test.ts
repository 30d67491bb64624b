import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  createCertificateAuthority,
  createCertificateService,
  createCertificateServiceClient,
} from "@ambient/spiffe/ca";
import { createXdsClient, createXdsServer, reconnectChannelOptions, TypeUrl } from "@ambient/xds";
import * as grpc from "@grpc/grpc-js";
import {
  CONTROL_PLANE_SERVER_NAME,
  controlPlaneChannel,
  DEFAULT_CONTROL_PLANE_IDENTITY,
  followRoots,
} from "./control-plane-channel.js";

describe("controlPlaneChannel", () => {
  // Run after the tests, whichever way they ended.
  const cleanups: (() => Promise<void> | void)[] = [];
  after(async () => {
    for (const cleanup of cleanups) await cleanup();
  });

  it("gives the xDS and the CA client one reconnect policy, capped at 15 s by default", async () => {
    const ca = await createCertificateAuthority({ trustDomain: "cluster.local" });
    const channel = controlPlaneChannel(ca.trustBundle().toPem());
    assert.equal(channel.maxBackoffMs, 15_000);
    assert.equal(channel.initialBackoffMs, 10);
    assert.equal(channel.channelOptions["grpc.ssl_target_name_override"], CONTROL_PLANE_SERVER_NAME);
    for (const [key, value] of Object.entries(reconnectChannelOptions())) {
      assert.equal(channel.channelOptions[key], value, key);
    }
    assert.ok((channel.channelOptions["grpc.max_reconnect_backoff_ms"] as number) * 1.2 <= 15_000);
    const small = controlPlaneChannel(ca.trustBundle().toPem(), DEFAULT_CONTROL_PLANE_IDENTITY, {
      maxBackoffMs: 1000,
    });
    assert.equal(small.maxBackoffMs, 1000);
    assert.equal(small.initialBackoffMs, 10);
    assert.equal(small.channelOptions["grpc.max_reconnect_backoff_ms"], 833);
  });

  it(
    "brings an xDS stream over TLS back within maxBackoffMs after the control plane was down",
    { timeout: 60_000 },
    async () => {
      const cap = 1000;
      const outageMs = 4500;
      const slackMs = 700;
      const ca = await createCertificateAuthority({ trustDomain: "cluster.local" });
      const istiod = await ca.issue({ spiffeId: DEFAULT_CONTROL_PLANE_IDENTITY });
      const serverCredentials = grpc.ServerCredentials.createSsl(
        null,
        [{ private_key: Buffer.from(istiod.privateKeyPem), cert_chain: Buffer.from(istiod.certChainPem) }],
        false,
      );
      const serve = async (at: string) => {
        const server = createXdsServer({ debounceMs: 0 });
        server.cache.set(TypeUrl.address, "u1", { workload: { uid: "u1", name: "w1", namespace: "ns" } });
        return { server, port: await server.listen(at, serverCredentials) };
      };
      let { server, port } = await serve("127.0.0.1:0");
      const client = createXdsClient({
        address: `127.0.0.1:${port}`,
        ...controlPlaneChannel(ca.trustBundle().toPem(), DEFAULT_CONTROL_PLANE_IDENTITY, {
          maxBackoffMs: cap,
        }),
        node: { id: "ztunnel~127.0.0.1~ztunnel-test.istio-system~istio-system.svc.cluster.local" },
      });
      client.watch(TypeUrl.address);
      await client.ready();
      await server.close();

      // While down, the port drops every connection; come back right after an attempt once the outage
      // is long enough, so the wait for the next one is the client's whole current back-off.
      const attempts: number[] = [];
      const downSince = performance.now();
      let cameBack: () => void = () => {};
      const longEnough = new Promise<void>((resolve) => {
        cameBack = resolve;
      });
      const down = createServer((socket) => {
        attempts.push(performance.now());
        socket.destroy();
        if (performance.now() - downSince >= outageMs) cameBack();
      });
      await new Promise<void>((resolve, reject) => {
        down.once("error", reject);
        down.listen(port, "127.0.0.1", () => resolve());
      });
      let giveUp: NodeJS.Timeout | undefined;
      await Promise.race([
        longEnough,
        new Promise((_, reject) => {
          giveUp = setTimeout(() => reject(new Error("no connection attempt in 30 s")), 30_000);
        }),
      ]);
      clearTimeout(giveUp);
      await new Promise<void>((resolve) => down.close(() => resolve()));

      let connectedAt: number | undefined;
      const stop = client.onConnection((up) => {
        if (up) connectedAt ??= performance.now();
      });
      ({ server } = await serve(`127.0.0.1:${port}`));
      const upAt = performance.now();
      const limit = cap + slackMs;
      while (connectedAt === undefined && performance.now() - upAt < limit * 4) {
        await new Promise((r) => setTimeout(r, 20));
      }
      stop();
      client.close();
      await server.close();
      const tookMs = connectedAt === undefined ? Number.POSITIVE_INFINITY : connectedAt - upAt;
      assert.ok(tookMs <= limit, `reconnected ${Math.round(tookMs)} ms after the control plane came back`);
      assert.ok(attempts.length >= 4, `${attempts.length} attempts during the outage`);
    },
  );

  it(
    "trusts the roots it is told from the next handshake on, on the same channel",
    { timeout: 30_000 },
    async () => {
      // The configured root is not the one the control plane's certificate chains to (as after a
      // rotation once the configured root expired); the roots a CA answer brings let it connect.
      const configured = await createCertificateAuthority({ trustDomain: "cluster.local" });
      const serving = await createCertificateAuthority({ trustDomain: "cluster.local" });
      const istiod = await serving.issue({ spiffeId: DEFAULT_CONTROL_PLANE_IDENTITY });
      const server = createXdsServer({ debounceMs: 0 });
      server.cache.set(TypeUrl.address, "u1", { workload: { uid: "u1", name: "w1", namespace: "ns" } });
      const port = await server.listen(
        "127.0.0.1:0",
        grpc.ServerCredentials.createSsl(
          null,
          [{ private_key: Buffer.from(istiod.privateKeyPem), cert_chain: Buffer.from(istiod.certChainPem) }],
          false,
        ),
      );
      const channel = controlPlaneChannel(configured.rootCertPem(), DEFAULT_CONTROL_PLANE_IDENTITY, {
        maxBackoffMs: 500,
      });
      const client = createXdsClient({
        address: `127.0.0.1:${port}`,
        ...channel,
        node: { id: "ztunnel~127.0.0.1~ztunnel-test.istio-system~istio-system.svc.cluster.local" },
      });
      try {
        let up = false;
        const stop = client.onConnection((connected) => {
          up ||= connected;
        });
        client.watch(TypeUrl.address);
        await new Promise((r) => setTimeout(r, 1500));
        assert.equal(up, false, "a certificate under a root it was not given is refused");
        assert.throws(() => channel.trustRoots("not a certificate"), { code: "ERR_PEM_INVALID" });
        channel.trustRoots(configured.rootCertPem() + serving.rootCertPem());
        await client.ready();
        stop();
        assert.ok(up);
      } finally {
        client.close();
        await server.close();
      }
    },
  );

  it(
    "drops a connection whose control plane stopped answering (keepalive) and connects again",
    { timeout: 10_000 },
    async () => {
      const ca = await createCertificateAuthority({ trustDomain: "cluster.local" });
      const istiod = await ca.issue({ spiffeId: DEFAULT_CONTROL_PLANE_IDENTITY });
      const server = createXdsServer({ debounceMs: 0 });
      server.cache.set(TypeUrl.address, "u1", { workload: { uid: "u1", name: "w1", namespace: "ns" } });
      const serverPort = await server.listen(
        "127.0.0.1:0",
        grpc.ServerCredentials.createSsl(
          null,
          [{ private_key: Buffer.from(istiod.privateKeyPem), cert_chain: Buffer.from(istiod.certChainPem) }],
          false,
        ),
      );
      // Between client and control plane, a relay whose connections can go silent at once: open,
      // but nothing gets through any more either way, as when the peer's host is gone.
      const relayed: [Socket, Socket][] = [];
      const relay = createServer((downstream) => {
        const upstream = connect({ host: "127.0.0.1", port: serverPort });
        for (const s of [downstream, upstream]) s.on("error", () => {});
        downstream.pipe(upstream);
        upstream.pipe(downstream);
        relayed.push([downstream, upstream]);
      });
      await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", () => resolve()));
      cleanups.push(async () => {
        for (const pair of relayed) for (const s of pair) s.destroy();
        await new Promise<void>((resolve) => relay.close(() => resolve()));
      });
      cleanups.push(() => server.close());
      const silence = () => {
        for (const [downstream, upstream] of relayed) {
          downstream.unpipe(upstream);
          upstream.unpipe(downstream);
          downstream.pause();
          upstream.pause();
        }
      };
      const client = createXdsClient({
        address: `127.0.0.1:${(relay.address() as { port: number }).port}`,
        ...controlPlaneChannel(
          ca.trustBundle().toPem(),
          DEFAULT_CONTROL_PLANE_IDENTITY,
          { maxBackoffMs: 500 },
          { intervalMs: 300, timeoutMs: 300 },
        ),
        node: { id: "ztunnel~127.0.0.1~ztunnel-test.istio-system~istio-system.svc.cluster.local" },
      });
      // First in line: the client goes before the server and the relay.
      cleanups.unshift(() => client.close());
      // The silent connection is given up, and a new one (which the relay carries) takes over.
      let dropped = false;
      let connectedAgain: () => void = () => {};
      const back = new Promise<void>((resolve) => {
        connectedAgain = resolve;
      });
      client.onConnection((connected) => {
        if (!connected) dropped = true;
        else if (dropped) connectedAgain();
      });
      client.watch(TypeUrl.address);
      await client.ready();
      const connections = relayed.length;
      silence();
      await back;
      assert.ok(relayed.length > connections, "connected again over a new connection");
    },
  );

  it("connects to a server whose certificate names it by DNS only, as istiod's does", async () => {
    // istiod's 15012 certificate has DNS SANs (istiod.istio-system.svc, ...) and no SPIFFE URI SAN; made
    // here by openssl, signed by a root of its own.
    const dir = mkdtempSync(join(tmpdir(), "istiod-cert-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"];
    openssl("req", "-x509", ...ec, "-keyout", "root.key", "-out", "root.pem", "-subj", "/O=cluster.local");
    openssl(
      ...["req", "-x509", ...ec, "-keyout", "istiod.key", "-out", "istiod.pem", "-subj", "/O=cluster.local"],
      ...[
        "-CA",
        "root.pem",
        "-CAkey",
        "root.key",
        "-addext",
        `subjectAltName=DNS:${CONTROL_PLANE_SERVER_NAME}`,
      ],
    );
    const server = new grpc.Server();
    cleanups.push(() => server.forceShutdown());
    // A CA that authenticates nobody: an answer at all means the TLS handshake passed.
    const ca = await createCertificateAuthority({ trustDomain: "cluster.local" });
    const service = createCertificateService({ ca, authenticators: [] });
    server.addService(service.definition, service.implementation);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(
        "127.0.0.1:0",
        grpc.ServerCredentials.createSsl(null, [
          {
            cert_chain: readFileSync(join(dir, "istiod.pem")),
            private_key: readFileSync(join(dir, "istiod.key")),
          },
        ]),
        (err, p) => (err ? reject(err) : resolve(p)),
      ),
    );
    const client = createCertificateServiceClient({
      address: `127.0.0.1:${port}`,
      ...controlPlaneChannel(readFileSync(join(dir, "root.pem"), "utf8")),
      timeoutMs: 5000,
    });
    cleanups.push(() => client.close());
    await assert.rejects(client.createCertificate("csr"), { code: "ERR_UNAUTHENTICATED" });
  });

  it("keeps its roots and logs when an answer's roots cannot be used", async () => {
    const ca = await createCertificateAuthority({ trustDomain: "cluster.local" });
    const channel = controlPlaneChannel(ca.rootCertPem());
    const warnings: string[] = [];
    const logger = { warn: (_o: object, msg?: string) => warnings.push(msg ?? "") };
    followRoots(channel, "not a certificate", logger);
    assert.deepEqual(warnings, ["control plane channel keeps its roots"]);
    followRoots(channel, ca.rootCertPem(), logger);
    assert.equal(warnings.length, 1);
  });
});
