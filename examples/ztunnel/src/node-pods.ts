// Node mode: an inbound HBONE listener on each local pod's IP, in this process's namespace, kept in
// line with the workloads xDS places on this node (certificates fetched by impersonation).
import { createHboneServer, type HboneServer, type InboundTunnel } from "@ambient/hbone";
import type { X509Svid } from "@ambient/spiffe";
import type { SecretManager } from "@ambient/spiffe/ca";
import type { Workload } from "@ambient/xds";
import { ClosingServers } from "./connections.js";
import type { Logger, MetricsSink } from "./telemetry.js";
import { identityOf, ipv4Of, usesHbone, type WorkloadStore } from "./workload-store.js";

const RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;

interface NodePod {
  uid: string;
  ip: string;
  identity: string;
  server?: HboneServer;
  started: Promise<void>;
  stopped: boolean;
}

/** A local pod as `/config_dump` lists it. */
export interface LocalPodSummary {
  uid: string;
  ip: string;
  identity: string;
  listening: boolean;
}

export interface NodePodsOptions {
  nodeName: string;
  hbonePort: number;
  store: WorkloadStore;
  secrets: SecretManager;
  svidOf(identity: string): Promise<X509Svid>;
  /** The roots a workload trusts, given its certificate (`trustedRootsOf`). */
  trustOf(svid: X509Svid): string;
  onTunnel(pod: { uid: string; ip: string }, tunnel: InboundTunnel): void;
  /** A delay that the proxy's close() cuts short. */
  pause(ms: number): Promise<void>;
  isClosed(): boolean;
  /** Identities other parts still need, so a removed pod does not drop their certificate. */
  identityInUse(identity: string): boolean;
  logger: Logger;
  metrics: MetricsSink;
}

export interface NodePods {
  /** Opens and closes listeners to match the store. */
  reconcile(): void;
  /** Resolves when every pod's listener is up (or its start gave up). */
  started(): Promise<void>;
  /** New SVID for `identity`: the listeners serving it take it. */
  rotate(identity: string, svid: X509Svid): void;
  has(identity: string): boolean;
  size(): number;
  summaries(): LocalPodSummary[];
  /**
   * Graceful shutdown: every pod's HBONE listener stops accepting and sends GOAWAY on its
   * connections, whose tunnels have `deadlineMs` to end (then they are reset); no listener opens
   * from now on.
   */
  drain(deadlineMs: number): void;
  /** Since {@link NodePods.drain}: every listener has closed, its connections with it. */
  drained(): boolean;
  close(): Promise<void>;
}

export function createNodePods(options: NodePodsOptions): NodePods {
  const { logger, metrics, trustOf } = options;
  const pods = new Map<string, NodePod>();

  let draining = false;
  const closing = new ClosingServers();

  const startPod = async (pod: NodePod): Promise<void> => {
    let attempt = 0;
    while (!pod.stopped && !draining && !options.isClosed()) {
      try {
        const svid = await options.svidOf(pod.identity);
        if (pod.stopped || options.isClosed()) return;
        const server = createHboneServer({
          key: svid.privateKeyPem,
          certChain: svid.certChainPem,
          trustBundle: trustOf(svid),
          onTunnel: (tunnel) => options.onTunnel(pod, tunnel),
          logger,
          metrics,
        });
        try {
          await server.listen({ host: pod.ip, port: options.hbonePort });
        } catch (err) {
          await server.close({ timeoutMs: 0 }).catch(() => {});
          throw err;
        }
        pod.server = server;
        if (pod.stopped || draining || options.isClosed()) await server.close({ timeoutMs: 0 });
        else logger.info({ pod: pod.uid, ip: pod.ip, identity: pod.identity }, "inbound HBONE listener up");
        return;
      } catch (err) {
        // Own back-off: calling fetch again restarts the CA request at once.
        const retryInMs = Math.min(MAX_RETRY_MS, RETRY_MS * 2 ** attempt++);
        logger.warn(
          { pod: pod.uid, err: (err as Error).message, retryInMs },
          "local pod not ready, retrying",
        );
        await options.pause(retryInMs);
      }
    }
  };

  const stopPod = (pod: NodePod): void => {
    pod.stopped = true;
    pods.delete(pod.uid);
    pod.server?.close({ timeoutMs: 1000 }).catch(() => {});
    if (!has(pod.identity) && !options.identityInUse(pod.identity)) options.secrets.forget(pod.identity);
    logger.info({ pod: pod.uid, ip: pod.ip }, "local pod removed");
  };

  const has = (identity: string): boolean => [...pods.values()].some((p) => p.identity === identity);

  const reconcile = (): void => {
    if (draining) return;
    const wanted = new Map<string, Workload>();
    for (const w of options.store.workloadsOnNode(options.nodeName)) if (usesHbone(w)) wanted.set(w.uid, w);
    for (const pod of [...pods.values()]) {
      const w = wanted.get(pod.uid);
      if (w === undefined || ipv4Of(w) !== pod.ip || identityOf(w) !== pod.identity) stopPod(pod);
    }
    for (const [uid, w] of wanted) {
      const ip = ipv4Of(w);
      if (pods.has(uid) || ip === undefined) continue;
      const pod: NodePod = { uid, ip, identity: identityOf(w), started: Promise.resolve(), stopped: false };
      pod.started = startPod(pod);
      pods.set(uid, pod);
    }
  };

  return {
    reconcile,
    started: async () => {
      await Promise.all([...pods.values()].map((p) => p.started));
    },
    rotate(identity, svid) {
      for (const pod of pods.values()) {
        if (pod.identity === identity && pod.server !== undefined) {
          pod.server.setCredentials({
            key: svid.privateKeyPem,
            certChain: svid.certChainPem,
            trustBundle: trustOf(svid),
          });
        }
      }
    },
    has,
    size: () => pods.size,
    summaries: () =>
      [...pods.values()].map((p) => ({
        uid: p.uid,
        ip: p.ip,
        identity: p.identity,
        listening: p.server !== undefined,
      })),
    drain(deadlineMs) {
      if (draining) return;
      draining = true;
      for (const pod of pods.values()) if (pod.server !== undefined) closing.close(pod.server, deadlineMs);
    },
    drained: () => closing.done,
    async close() {
      await Promise.all(
        [...pods.values()].map(async (p) => {
          p.stopped = true;
          await p.started.catch(() => {});
          await p.server?.close({ timeoutMs: 500 }).catch(() => {});
        }),
      );
      pods.clear();
    },
  };
}
