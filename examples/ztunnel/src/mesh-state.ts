// State from the control plane: workloads and Services (xDS `Address`), policies (xDS
// `Authorization`) and the local pods' certificates (CA, by impersonation). The data path reads it;
// `onChange` tells the proxy when to reconcile listeners and recheck open connections.
import { type AuthorizationEngine, createAuthorizationEngine, type WireAuthorization } from "@ambient/policy";
import type { X509Svid } from "@ambient/spiffe";
import { createCertificateServiceClient, SecretManager } from "@ambient/spiffe/ca";
import { createXdsClient, TypeUrl, type WorkloadAddress, type XdsChangeEvent } from "@ambient/xds";
import type { ControlPlaneChannel } from "./control-plane-channel.js";
import type { Logger, MetricsSink } from "./telemetry.js";
import { WorkloadStore } from "./workload-store.js";

export interface MeshStateOptions {
  /** Control plane gRPC target (xDS and CA). */
  address: string;
  /** TLS channel to it (see control-plane-channel.ts). */
  channel: ControlPlaneChannel;
  token: string | (() => string);
  clusterId: string;
  node: { id: string; name: string };
  certificateTtlSeconds?: number;
  /**
   * On-demand Addresses (ztunnel `XDS_ON_DEMAND`): no wildcard watch; the control plane sends the
   * node's pods, and the rest is asked for with `lookupAddresses`. Default false.
   */
  onDemand?: boolean;
  logger: Logger;
  metrics: MetricsSink;
}

export interface MeshState {
  store: WorkloadStore;
  engine: AuthorizationEngine;
  secrets: SecretManager;
  /** The SVID of `identity`, fetched from the CA when not held yet. */
  svidOf(identity: string): Promise<X509Svid>;
  /**
   * Called after every applied xDS change (which kind of state changed), from the moment the first
   * response of both types is in ({@link MeshState.ready}); earlier changes are not announced.
   */
  onChange(listener: (kind: "workloads" | "policies") => void): void;
  /**
   * Asks the control plane for Address names (`network/IP`, `namespace/hostname`) and resolves when it
   * answered, with what it had, or after `timeoutMs`; what came is in the store by then.
   */
  lookupAddresses(
    names: string[],
    timeoutMs: number,
  ): Promise<{ missing: readonly string[]; unanswered: readonly string[] }>;
  /** Stops following Address names asked for with `lookupAddresses`. */
  forgetAddresses(names: string[]): void;
  /** Resolves when the first response of both types is in. */
  ready(): Promise<void>;
  /** Closes the xDS stream (no more changes). */
  stopUpdates(): void;
  /** Stops renewing certificates and closes the CA channel. */
  close(): void;
}

export function createMeshState(options: MeshStateOptions): MeshState {
  const { address, channel, logger, metrics } = options;
  const { token } = options;
  const tokenNow = typeof token === "function" ? token : () => token;
  const store = new WorkloadStore();
  const engine = createAuthorizationEngine({ logger, metrics });
  const caClient = createCertificateServiceClient({
    address,
    ...channel,
    token: tokenNow,
    clusterId: options.clusterId,
  });
  const secrets = new SecretManager({
    client: caClient,
    impersonate: true,
    logger,
    metrics,
    ...(options.certificateTtlSeconds === undefined ? {} : { ttlSeconds: options.certificateTtlSeconds }),
  });
  const xds = createXdsClient({
    address,
    ...channel,
    node: { id: options.node.id, metadata: { NODE_NAME: options.node.name, CLUSTER_ID: options.clusterId } },
    headers: () => ({ authorization: `Bearer ${tokenNow()}` }),
    logger,
    metrics,
  });
  const listeners: ((kind: "workloads" | "policies") => void)[] = [];
  // Workloads without their policies are half a state: a node proxy told of its pods then would open
  // their listeners and allow every connection until the policies came (or forever, if their first
  // push never arrives). Nothing is announced until both types are in (set once both are watched,
  // below); the proxy takes the whole state once ready.
  let complete = false;

  xds.onChange((event: XdsChangeEvent) => {
    let kind: "workloads" | "policies" | undefined;
    if (event.typeUrl === TypeUrl.address) {
      for (const r of [...event.added, ...event.updated]) store.upsert(r.name, r.resource as WorkloadAddress);
      for (const name of event.removed) store.remove(name);
      kind = "workloads";
    } else if (event.typeUrl === TypeUrl.authorization) {
      for (const r of [...event.added, ...event.updated]) {
        try {
          engine.setAuthorization(r.resource as unknown as WireAuthorization);
        } catch (err) {
          // Last good state wins: a policy that does not validate leaves the one in force.
          logger.warn({ policy: r.name, err: (err as Error).message }, "authorization ignored");
        }
      }
      for (const name of event.removed) {
        const slash = name.indexOf("/");
        if (slash > 0) engine.delete("Authorization", name.slice(0, slash), name.slice(slash + 1));
      }
      kind = "policies";
    }
    if (kind !== undefined && complete) for (const listener of listeners) listener(kind);
  });
  xds.onConnection((connected, error) => {
    if (connected) logger.info({ address }, "xDS connected");
    else logger.warn({ address, err: error?.message }, "xDS disconnected");
  });
  xds.onNack((typeUrl, message) => logger.warn({ typeUrl, message }, "xDS response rejected"));
  // Istio's ztunnel names (src/xds/metrics.rs), so its dashboards read them.
  const terminations = metrics.counter(
    "istio_xds_connection_terminations_total",
    "Ended connections to the xDS server, by reason",
    ["reason"],
  );
  const messages = metrics.counter("istio_xds_message_total", "xDS messages received", ["url"]);
  const messageBytes = metrics.counter(
    "istio_xds_message_bytes_total",
    "Bytes of the resources in the xDS messages received",
    ["url"],
  );
  xds.onStreamEnd((reason) => terminations.inc({ reason }));
  xds.onMessage((url, bytes) => {
    messages.inc({ url });
    messageBytes.inc({ url }, bytes);
  });
  xds.watch(TypeUrl.address, options.onDemand === true ? { wildcard: false } : {});
  xds.watch(TypeUrl.authorization);
  xds.ready().then(
    () => {
      complete = true;
    },
    () => {},
  );

  return {
    store,
    engine,
    secrets,
    svidOf: async (identity) => secrets.get(identity) ?? secrets.fetch(identity),
    onChange: (listener) => {
      listeners.push(listener);
    },
    lookupAddresses: async (names, timeoutMs) => xds.lookup(TypeUrl.address, names, { timeoutMs }),
    forgetAddresses: (names) => {
      try {
        xds.unsubscribe(TypeUrl.address, names);
      } catch {
        // Closed: nothing is followed any more.
      }
    },
    ready: () => xds.ready(),
    stopUpdates: () => xds.close(),
    close() {
      xds.close();
      secrets.close();
      caClient.close();
    },
  };
}
