import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server } from "node:net";
import { createHboneClient, createHboneServer, pipeTunnel } from "@ambient/hbone";
import { SpiffeId } from "@ambient/spiffe";
import { createCertificateAuthority } from "@ambient/spiffe/ca";

/** What one run of the quickstart saw, for printing and for its test. */
export interface QuickstartReport {
  trustDomain: string;
  client: string;
  server: string;
  /** The identity the HBONE server saw on the tunnel. */
  peerIdentity: string;
  /** What the backend echoed back through the tunnel. */
  reply: string;
  /** A client whose identity the server does not allow is refused with this HTTP status. */
  refusedStatus: number | undefined;
}

/**
 * Runs a two-workload mesh in one process on 127.0.0.1: a CA issues SVIDs to `sleep` and `echo`, an HBONE
 * server in front of a TCP echo backend accepts only `sleep`, and a pooled HBONE client tunnels to it.
 */
export async function runQuickstart(log: (line: string) => void = () => {}): Promise<QuickstartReport> {
  const trustDomain = "cluster.local";
  const ca = await createCertificateAuthority({ trustDomain });
  const sleepId = SpiffeId.fromIstio({ trustDomain, namespace: "default", serviceAccount: "sleep" });
  const echoId = SpiffeId.fromIstio({ trustDomain, namespace: "default", serviceAccount: "echo" });
  const strangerId = SpiffeId.fromIstio({ trustDomain, namespace: "other", serviceAccount: "stranger" });
  const [sleepSvid, echoSvid, strangerSvid] = await Promise.all(
    [sleepId, echoId, strangerId].map((spiffeId) => ca.issue({ spiffeId })),
  );
  const roots = ca.trustBundle().toPem();
  log(`CA for ${trustDomain} issued ${sleepId}, ${echoId} and ${strangerId}`);

  // The application behind the server: a TCP echo on an ephemeral loopback port.
  const backend: Server = createServer({ allowHalfOpen: true }, (socket) => socket.pipe(socket));
  backend.listen(0, "127.0.0.1");
  await once(backend, "listening");
  const backendPort = (backend.address() as AddressInfo).port;

  let peerIdentity = "";
  const server = createHboneServer({
    key: echoSvid!.privateKeyPem,
    certChain: echoSvid!.certChainPem,
    trustBundle: roots,
    onTunnel: (tunnel) => {
      // Authorization: only `sleep` may reach the echo backend.
      if (tunnel.peerIdentity.toString() !== sleepId.toString()) {
        tunnel.refuse(401);
        return;
      }
      peerIdentity = tunnel.peerIdentity.toString();
      const upstream = connect({ host: "127.0.0.1", port: backendPort, allowHalfOpen: true });
      upstream.once("connect", () => {
        pipeTunnel(tunnel.accept(), upstream).catch(() => {});
      });
      upstream.once("error", () => {
        if (tunnel.state === "pending") tunnel.refuse(503);
      });
    },
  });
  const { port } = await server.listen({ host: "127.0.0.1", port: 0 });
  log(`HBONE server for ${echoId} on 127.0.0.1:${port}, forwarding to the echo backend on :${backendPort}`);

  const client = createHboneClient({
    key: sleepSvid!.privateKeyPem,
    certChain: sleepSvid!.certChainPem,
    trustBundle: roots,
  });
  const stranger = createHboneClient({
    key: strangerSvid!.privateKeyPem,
    certChain: strangerSvid!.certChainPem,
    trustBundle: roots,
  });
  try {
    const target = { address: `127.0.0.1:${port}`, authority: `127.0.0.1:${backendPort}` };
    const tunnel = await client.connect({ ...target, expectedIdentities: [echoId.toString()] });
    const chunks: Buffer[] = [];
    tunnel.on("data", (chunk: Buffer) => chunks.push(chunk));
    tunnel.end("hello through HBONE");
    await once(tunnel, "end");
    const reply = Buffer.concat(chunks).toString();
    log(`${sleepId} -> ${echoId}: sent "hello through HBONE", echoed "${reply}"`);

    let refusedStatus: number | undefined;
    try {
      const denied = await stranger.connect({ ...target, expectedIdentities: [echoId.toString()] });
      denied.destroy();
    } catch (err) {
      refusedStatus = (err as { status?: number }).status;
      log(`${strangerId} -> ${echoId}: refused with HTTP ${refusedStatus} (${(err as Error).message})`);
    }
    return {
      trustDomain,
      client: sleepId.toString(),
      server: echoId.toString(),
      peerIdentity,
      reply,
      refusedStatus,
    };
  } finally {
    await Promise.all([client.close(), stranger.close()]);
    await server.close();
    backend.close();
  }
}
