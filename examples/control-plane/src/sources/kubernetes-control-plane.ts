// The control plane as it runs in a cluster: objects from the Kubernetes source, callers checked by
// TokenReview, the CA root from a Secret shared by every replica, and one leader (a Lease) that writes
// waypoint Gateway status. A composition root: each part lives in its own module.
import type { KubeConfig } from "@kubernetes/client-node";
import {
  type ControlPlane,
  type ControlPlaneOptions,
  startControlPlane,
  validateMeshDomains,
} from "../control-plane.js";
import { CLUSTER_POD_CIDRS } from "../pod-address.js";
import { type Logger, noopLogger } from "../telemetry.js";
import { waypointStatusUpdates, writeGatewayStatus } from "./gateway-status.js";
import {
  loadCaFromSecrets,
  readSelfSignedCaRoot,
  SELF_SIGNED_CA_SECRET,
  writeSelfSignedCaSecret,
} from "./kubernetes-ca.js";
import {
  createKubernetesSource,
  type KubernetesSource,
  type KubernetesSourceOptions,
} from "./kubernetes-source.js";
import { type LeaderElection, type LeaderElectionOptions, startLeaderElection } from "./leader-election.js";
import { createRootCertPublisher } from "./root-cert-publisher.js";
import { ServiceEntryStatusPlanner, writeServiceEntryStatus } from "./service-entry-status.js";
import { createTokenReviewAuthenticator, identitiesOfPods } from "./token-review-authenticator.js";

/** Options of {@link startKubernetesControlPlane}. */
export interface KubernetesControlPlaneOptions
  extends Omit<
    ControlPlaneOptions,
    | "meshDir"
    | "source"
    | "authenticator"
    | "identitiesOnNode"
    | "cacerts"
    | "cacertsSelfSigned"
    | "persistRoot"
    | "stateDir"
    | "watch"
    | "watchDebounceMs"
    | "manifestLimits"
    | "extraNodes"
  > {
  kubeConfig: KubeConfig;
  /**
   * IPv4 ranges pod IPs must fall in. Default {@link CLUSTER_POD_CIDRS}, every address (istiod checks
   * none): the kubelet reports a pod's IP from whatever ranges the CNI uses. Give the cluster's pod
   * ranges (`--cluster-cidr`, or the CNI's pools) to refuse pods outside them.
   */
  podCidrs?: readonly string[];
  /** This replica's name (the pod name, `POD_NAME`), its `holderIdentity` in the Lease. */
  identity: string;
  /** Namespace of the CA Secrets and the Lease. Default `istio-system`. */
  systemNamespace?: string;
  /** Informer settings (page size, watch timeouts, retries). */
  sourceOptions?: Omit<KubernetesSourceOptions, "kubeConfig" | "logger">;
  /** Lease settings. Defaults: 15 s lease, 10 s renew deadline, 2 s retry (client-go's). */
  leaderElection?: Pick<
    LeaderElectionOptions,
    "name" | "leaseDurationSeconds" | "renewDeadlineMs" | "retryPeriodMs"
  >;
  /**
   * How often the leader compares waypoint Gateway status (address, conditions, listeners) with their
   * Services and specs. Default 2000 ms.
   */
  statusIntervalMs?: number;
  logger?: Logger;
}

/** A control plane replica on Kubernetes. */
export interface KubernetesControlPlane {
  controlPlane: ControlPlane;
  source: KubernetesSource;
  /** The Secret the CA came from (`cacerts` or `istio-ca-secret`). */
  caSecret: string;
  isLeader(): boolean;
  /** Steps down, stops the informers and the servers. */
  close(): Promise<void>;
}

/** Starts one replica; several may run against the same cluster. */
export async function startKubernetesControlPlane(
  options: KubernetesControlPlaneOptions,
): Promise<KubernetesControlPlane> {
  const { kubeConfig, identity, sourceOptions, leaderElection, statusIntervalMs, systemNamespace, ...rest } =
    options;
  const logger = options.logger ?? noopLogger;
  validateMeshDomains(options);
  const trustDomain = options.trustDomain ?? "cluster.local";
  const namespace = systemNamespace ?? "istio-system";
  const ca = await loadCaFromSecrets({ kubeConfig, namespace, trustDomain });
  logger.info({ secret: `${namespace}/${ca.secret}`, created: ca.created }, "CA loaded from Secret");
  const source = await createKubernetesSource({ kubeConfig, logger, ...sourceOptions });
  const missing = source.missing();
  if (missing.length > 0) logger.warn({ missing }, "kubernetes resources not installed: served without them");
  // The self-signed root in istio-ca-secret is rotated by the leader alone, which writes it back; every
  // replica reads the Secret at each check and takes a root re-issued there (istiod's rotation).
  const ownRoot = ca.secret === SELF_SIGNED_CA_SECRET;
  let election: LeaderElection | undefined;
  const rotation = options.rootRotation;
  const controlPlane = await startControlPlane({
    ...rest,
    // istiod's chart trusts the ztunnel account of the namespace it is installed in.
    trustedNodeAccounts: rest.trustedNodeAccounts ?? [`${namespace}/ztunnel`],
    ...(ownRoot
      ? {
          cacertsSelfSigned: true,
          persistRoot: (cacerts) => writeSelfSignedCaSecret(kubeConfig, namespace, cacerts),
        }
      : {}),
    rootRotation:
      rotation === false ? false : { ...rotation, shouldRotate: () => election?.isLeader() === true },
    // Pods are HBONE once istio-cni has captured them, as istiod reads it.
    captureSignal: options.captureSignal ?? "redirection",
    // The cluster's own pod IPs, whichever ranges its CNI uses, unless the operator narrows them.
    podCidrs: options.podCidrs ?? CLUSTER_POD_CIDRS,
    source,
    cacerts: ca.cacerts,
    authenticator: createTokenReviewAuthenticator({
      kubeConfig,
      trustDomain,
      pod: (ns, name) => source.pod(ns, name),
    }),
    identitiesOnNode: (node) => identitiesOfPods(source.podsOnNode(node), trustDomain),
  });

  const rootCerts = createRootCertPublisher(kubeConfig, () => controlPlane.rootCertPem, logger);
  let rootSeen: string | undefined;
  let following = false;
  const followRoot = async (): Promise<void> => {
    // One read at a time: a slow API server does not stack them up.
    if (following) return;
    following = true;
    try {
      const root = await readSelfSignedCaRoot(kubeConfig, namespace);
      if (root === undefined || root === rootSeen) return;
      // Remembered before adopting: a root that cannot be adopted is reported once, not every check.
      rootSeen = root;
      if (await controlPlane.adoptRoot(root)) reconcileStatus();
    } finally {
      following = false;
    }
  };
  const rootTimer =
    ownRoot && rotation !== false
      ? setInterval(
          () => {
            followRoot().catch((err: unknown) =>
              logger.warn(
                { err: err instanceof Error ? err.message : String(err) },
                "CA Secret check failed",
              ),
            );
          },
          (rotation?.checkIntervalSeconds ?? 3600) * 1000,
        )
      : undefined;
  rootTimer?.unref();
  let writing: Promise<unknown> = Promise.resolve();
  // Gateway -> the resourceVersion of the cached Gateway its last status write was planned from. While
  // the cache still shows that version the write is not in it yet, and is not made again; any newer
  // version (this write, or anyone's) is planned afresh.
  const statusWritten = new Map<string, string>();
  const domainSuffix = options.domainSuffix ?? "cluster.local";
  // ServiceEntry hosts without addresses get one, written to the entries' status (istiod's allocation).
  const entryStatus =
    options.allocateServiceEntryAddresses === false ? undefined : new ServiceEntryStatusPlanner();
  const reconcileStatus = (): void => {
    // One pass at a time; a pass that finds everything current writes nothing.
    writing = writing.then(async () => {
      if (election?.isLeader() !== true) return;
      const gateways = source.objects("Gateway");
      const waypointNamespaces = gateways
        .filter((g) => g.spec?.gatewayClassName === "istio-waypoint")
        .map((g) => g.metadata?.namespace ?? "");
      await rootCerts.publish([namespace, ...waypointNamespaces.filter((n) => n !== "")]);
      const due = waypointStatusUpdates(gateways, (ns, name) => source.object("Service", ns, name), {
        domainSuffix,
      });
      const dueKeys = new Set(due.map((u) => `${u.namespace}/${u.name}`));
      // Seen current in the cache: a later change by anyone is written again.
      for (const key of statusWritten.keys()) if (!dueKeys.has(key)) statusWritten.delete(key);
      // A status just written may not be in the informer cache yet: not written twice.
      const updates = due.filter(
        (u) =>
          u.resourceVersion === undefined ||
          statusWritten.get(`${u.namespace}/${u.name}`) !== u.resourceVersion,
      );
      // Each write is made while this replica leads: one that lost its lease mid-pass stops there.
      const leading = () => election?.isLeader() === true;
      for (const u of await writeGatewayStatus(kubeConfig, updates, logger, leading)) {
        if (u.resourceVersion !== undefined) statusWritten.set(`${u.namespace}/${u.name}`, u.resourceVersion);
      }
      if (entryStatus !== undefined) {
        const entryUpdates = entryStatus.due(source.objects("ServiceEntry"));
        for (const u of await writeServiceEntryStatus(kubeConfig, entryUpdates, logger, leading))
          entryStatus.written(u);
      }
    });
  };
  election = startLeaderElection({
    kubeConfig,
    namespace,
    identity,
    logger,
    ...leaderElection,
    onStartedLeading: () => {
      rootCerts.reset();
      statusWritten.clear();
      entryStatus?.reset();
      reconcileStatus();
    },
  });
  const statusTimer = setInterval(reconcileStatus, statusIntervalMs ?? 2000);
  statusTimer.unref();

  return {
    controlPlane,
    source,
    caSecret: ca.secret,
    isLeader: () => election?.isLeader() === true,
    async close() {
      clearInterval(statusTimer);
      clearInterval(rootTimer);
      await election?.stop();
      await writing;
      await controlPlane.close();
    },
  };
}
