// One writer among the replicas: a `coordination.k8s.io/v1` Lease, as client-go's leader election
// keeps it. Every replica serves xDS and the CA whether it leads or not; only the leader writes to the
// cluster (Gateway status), so two replicas never fight over one field.
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "../telemetry.js";
import { noopLogger } from "../telemetry.js";
import { KubeRequestError, kubeRequest } from "./kube-client.js";

/** Options of {@link startLeaderElection}. */
export interface LeaderElectionOptions {
  kubeConfig: KubeConfig;
  /** Namespace of the Lease. Default `istio-system`. */
  namespace?: string;
  /** Lease name. Default `ambient-control-plane-leader`; istiod uses several (`istio-gateway-status-leader`...). */
  name?: string;
  /** This replica, written as `holderIdentity`: the pod name. */
  identity: string;
  /** How long a lease holds without renewal. Default 15 s; client-go `LeaseDuration`. */
  leaseDurationSeconds?: number;
  /** A leader that could not renew for this long steps down. Default 10 s; client-go `RenewDeadline`. */
  renewDeadlineMs?: number;
  /** Interval between attempts. Default 2 s; client-go `RetryPeriod`. */
  retryPeriodMs?: number;
  onStartedLeading?: () => void;
  onStoppedLeading?: () => void;
  logger?: Logger;
}

/** A running election. */
export interface LeaderElection {
  isLeader(): boolean;
  /** Steps down (releases the lease when held) and stops. */
  stop(): Promise<void>;
}

interface Lease {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec?: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

function microTime(date: Date): string {
  return date.toISOString().replace(/Z$/, "000Z");
}

/** Starts campaigning; `onStartedLeading` / `onStoppedLeading` mark the changes. */
export function startLeaderElection(options: LeaderElectionOptions): LeaderElection {
  const kc = options.kubeConfig;
  const namespace = options.namespace ?? "istio-system";
  const name = options.name ?? "ambient-control-plane-leader";
  const duration = options.leaseDurationSeconds ?? 15;
  const renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
  const retryMs = options.retryPeriodMs ?? 2000;
  const logger = options.logger ?? noopLogger;
  const path = `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`;
  let leader = false;
  let lastRenew = 0;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  // Another holder's lease, and when this replica first saw its current renewTime (local clock only).
  let observed: { renewTime: string | undefined; holder: string | undefined; at: number } | undefined;

  let inflight: Promise<void> = Promise.resolve();
  const setLeader = (value: boolean): void => {
    // An attempt that was in flight when stop() was called does not make a stopped replica lead.
    if (leader === value || (value && stopped)) return;
    leader = value;
    logger.info(
      { lease: `${namespace}/${name}`, identity: options.identity, leader: value },
      "leadership changed",
    );
    if (value) options.onStartedLeading?.();
    else options.onStoppedLeading?.();
  };

  const attempt = async (): Promise<void> => {
    const now = new Date();
    let lease: Lease | undefined;
    try {
      lease = (await kubeRequest(kc, "GET", `${path}/${name}`)) as Lease;
    } catch (err) {
      if (!(err instanceof KubeRequestError && err.statusCode === 404)) throw err;
    }
    const spec = {
      holderIdentity: options.identity,
      leaseDurationSeconds: duration,
      renewTime: microTime(now),
    };
    if (lease === undefined) {
      await kubeRequest(kc, "POST", path, {
        contentType: "application/json",
        value: {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name, namespace },
          spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 },
        },
      });
      lastRenew = Date.now();
      setLeader(true);
      return;
    }
    const holder = lease.spec?.holderIdentity;
    if (holder !== options.identity && holder !== undefined && holder !== "") {
      // Expiry is judged by how long this replica has seen the same renewTime, not by comparing clocks.
      const renewTime = lease.spec?.renewTime;
      if (observed === undefined || observed.renewTime !== renewTime || observed.holder !== holder) {
        observed = { renewTime, holder, at: Date.now() };
      }
      const heldFor = (lease.spec?.leaseDurationSeconds ?? duration) * 1000;
      if (Date.now() - observed.at < heldFor) {
        setLeader(false);
        return;
      }
    }
    const taking = holder !== options.identity;
    await kubeRequest(kc, "PUT", `${path}/${name}`, {
      contentType: "application/json",
      value: {
        ...lease,
        spec: {
          ...lease.spec,
          ...spec,
          ...(taking
            ? { acquireTime: microTime(now), leaseTransitions: (lease.spec?.leaseTransitions ?? 0) + 1 }
            : {}),
        },
      },
    });
    lastRenew = Date.now();
    setLeader(true);
  };

  const loop = async (): Promise<void> => {
    if (stopped) return;
    try {
      inflight = attempt();
      await inflight;
    } catch (err) {
      // 409: another replica wrote first. Anything else: the API server is away.
      if (!(err instanceof KubeRequestError && err.statusCode === 409)) {
        logger.warn(
          { err: err instanceof Error ? err.message : String(err) },
          "leader election attempt failed",
        );
      }
      if (leader && Date.now() - lastRenew > renewDeadlineMs) setLeader(false);
      else if (err instanceof KubeRequestError && err.statusCode === 409 && !leader) setLeader(false);
    }
    if (!stopped) {
      timer = setTimeout(() => void loop(), retryMs);
      timer.unref();
    }
  };
  void loop();

  return {
    isLeader: () => leader,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      // An attempt in flight may still take or renew the lease: release after it.
      await inflight.catch(() => undefined);
      setLeader(false);
      // Released, so a successor need not wait out the lease.
      try {
        const lease = (await kubeRequest(kc, "GET", `${path}/${name}`)) as Lease;
        if (lease.spec?.holderIdentity === options.identity) {
          await kubeRequest(kc, "PUT", `${path}/${name}`, {
            contentType: "application/json",
            value: { ...lease, spec: { ...lease.spec, holderIdentity: "", leaseDurationSeconds: 1 } },
          });
        }
      } catch (err) {
        logger.warn({ err: err instanceof Error ? err.message : String(err) }, "lease release failed");
      }
    },
  };
}
