// State from the control plane: workloads and Services (xDS `Address`), policies (xDS
// `Authorization`) and the local pods' certificates (CA, by impersonation). The data path reads it;
// `onChange` tells the proxy when to reconcile listeners and recheck open connections.
import { type AuthorizationEngine, createAuthorizationEngine, type WireAuthorization } from "@ambient/policy";
import type { X509Svid } from "@ambient/spiffe";
import { createCertificateServiceClient, SecretManager } from "@ambient/spiffe/ca";
import {
  createXdsClient,
  TypeUrl,
  type WorkloadAddress,
  type XdsChangeEvent,
  type XdsRejectedResource,
} from "@ambient/xds";
import type { ControlPlaneChannel } from "./control-plane-channel.js";
import type { Logger, MetricsSink } from "./telemetry.js";
import { addressProblem, WorkloadStore } from "./workload-store.js";

export interface MeshStateOptions {
  /** Control plane gRPC target (xDS and CA). */
  address: string;
  /** TLS channel to it (see control-plane-channel.ts). */
  channel: ControlPlaneChannel;
  token: string | (() => string);
  /** Sent as `clusterid` on every xDS stream and CA call and as `CLUSTER_ID` in the xDS node metadata. */
  clusterId: string;
  /**
   * The xDS node: its id, the Kubernetes node name and, as Istio's ztunnel sends them, the proxy's own
   * pod (`NAME`, `NAMESPACE`) and IP (`INSTANCE_IPS`) when known.
   */
  node: { id: string; name: string; ip?: string; pod?: { name: string; namespace: string } };
  certificateTtlSeconds?: number;
  /**
   * On-demand Addresses (ztunnel `XDS_ON_DEMAND`): no wildcard watch; the control plane sends the
   * node's pods, and the rest is asked for with `lookupAddresses`. Default false.
   */
  onDemand?: boolean;
  /** The network the node is on (ztunnel `NETWORK`): the store looks addresses up on it. Default `""`. */
  network?: string;
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

/** The mesh root namespace: its policies without a selector apply mesh-wide. */
const ROOT_NAMESPACE = "istio-system";

/**
 * What stands in for a policy that cannot be read and was never held: the strictest form it could
 * have. An unreadable action is taken as DENY, matching every connection in the policy's scope; a
 * readable ALLOW matches nothing, so where it applies only the other ALLOW policies admit anything.
 * An unreadable scope is the one a policy without a selector would have in its namespace, and a
 * name with no namespace makes the refusal mesh-wide. Dry-run is not honoured: it could not be
 * trusted either.
 */
function refusalOf(xdsName: string, resource: unknown): WireAuthorization {
  const body = typeof resource === "object" && resource !== null ? (resource as Record<string, unknown>) : {};
  const slash = xdsName.indexOf("/");
  const namespace = slash > 0 ? xdsName.slice(0, slash) : ROOT_NAMESPACE;
  const name = slash > 0 ? xdsName.slice(slash + 1) : xdsName;
  const scope =
    slash <= 0
      ? "GLOBAL"
      : body.scope === "GLOBAL" || body.scope === "NAMESPACE" || body.scope === "WORKLOAD_SELECTOR"
        ? body.scope
        : namespace === ROOT_NAMESPACE
          ? "GLOBAL"
          : "NAMESPACE";
  return body.action === "ALLOW"
    ? { name, namespace, scope, action: "ALLOW", groups: [] }
    : { name, namespace, scope, action: "DENY", groups: [{ rules: [] }] };
}

export function createMeshState(options: MeshStateOptions): MeshState {
  const { address, channel, logger, metrics } = options;
  const { token } = options;
  const tokenNow = typeof token === "function" ? token : () => token;
  const store = new WorkloadStore({ network: options.network ?? "" });
  const engine = createAuthorizationEngine({ logger, metrics, rootNamespace: ROOT_NAMESPACE });
  // Checks policies before they are accepted, without touching the engine in force.
  const checker = createAuthorizationEngine({ rootNamespace: ROOT_NAMESPACE });
  const authorizationProblem = (name: string, resource: unknown): string | undefined => {
    const wire = resource as WireAuthorization;
    try {
      checker.setAuthorization(wire);
    } catch (err) {
      return (err as Error).message;
    }
    checker.delete("Authorization", wire.namespace, wire.name);
    // Policies are stored under namespace/name and removed by their xDS name: the two must agree.
    const key = `${wire.namespace}/${wire.name}`;
    return name === key ? undefined : `policy ${key} sent under the name ${name}`;
  };
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
    node: {
      id: options.node.id,
      metadata: {
        ...(options.node.pod === undefined
          ? {}
          : { NAME: options.node.pod.name, NAMESPACE: options.node.pod.namespace }),
        ...(options.node.ip === undefined ? {} : { INSTANCE_IPS: options.node.ip }),
        NODE_NAME: options.node.name,
        CLUSTER_ID: options.clusterId,
      },
    },
    // The cluster goes with the token, as ztunnel's AuthSource sends it: the control plane checks the
    // caller in that cluster, and refuses one of a cluster it does not serve.
    headers: () => ({ authorization: `Bearer ${tokenNow()}`, clusterid: options.clusterId }),
    // One bad resource must not hold back every other pod's update (nor the first state, which gates
    // readiness): the good ones apply, the bad ones are NACKed by name and handled below.
    rejectScope: "resource",
    // An Address the store cannot use is refused here, so the workload or Service in force stays.
    validate: (typeUrl, name, resource) =>
      typeUrl === TypeUrl.authorization
        ? authorizationProblem(name, resource)
        : typeUrl === TypeUrl.address
          ? addressProblem(name, resource)
          : undefined,
    logger,
    metrics,
  });
  /** Refusals standing in for unreadable policies, by xDS name: where each is stored in the engine. */
  const refusals = new Map<string, { namespace: string; name: string }>();
  const dropRefusal = (xdsName: string): boolean => {
    const at = refusals.get(xdsName);
    if (at === undefined) return false;
    refusals.delete(xdsName);
    engine.delete("Authorization", at.namespace, at.name);
    return true;
  };
  const refuse = (r: XdsRejectedResource) => {
    if (r.name === undefined) return;
    // Last good state wins: a policy held before stays in force as it was.
    if (xds.get(TypeUrl.authorization, r.name) !== undefined) {
      logger.warn({ policy: r.name, err: r.reason }, "authorization rejected; the previous version stays");
      return;
    }
    // Never read: dropping it could allow what it denies, so the strictest reading stands in for it.
    const refusal = refusalOf(r.name, r.resource);
    dropRefusal(r.name);
    engine.setAuthorization(refusal);
    refusals.set(r.name, { namespace: refusal.namespace, name: refusal.name });
    logger.warn(
      { policy: r.name, err: r.reason, scope: refusal.scope, action: refusal.action },
      "authorization rejected; refusing what it could cover",
    );
  };
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
          const wire = r.resource as unknown as WireAuthorization;
          engine.setAuthorization(wire);
          // Stored under the same namespace/name, it has replaced the refusal standing in for it.
          const at = refusals.get(r.name);
          if (at !== undefined && at.namespace === wire.namespace && at.name === wire.name)
            refusals.delete(r.name);
          else dropRefusal(r.name);
        } catch (err) {
          // Last good state wins: a policy that does not validate leaves the one in force.
          logger.warn({ policy: r.name, err: (err as Error).message }, "authorization ignored");
        }
      }
      for (const name of event.removed) {
        if (dropRefusal(name)) continue;
        const slash = name.indexOf("/");
        if (slash > 0) engine.delete("Authorization", name.slice(0, slash), name.slice(slash + 1));
      }
      for (const r of event.rejected ?? []) refuse(r);
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
    // The certificate held while it is valid; one that expired (renewals failed) is fetched again, not
    // presented: a peer would refuse it.
    svidOf: (identity) => secrets.fetch(identity),
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
