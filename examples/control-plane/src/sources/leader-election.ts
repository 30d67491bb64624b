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
  /**
   * A leader that could not renew for this long steps down, also while a request is still on its way
   * (each request to the Lease gives up after half of it, at least 1 s). Default 10 s; client-go
   * `RenewDeadline`.
   */
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
  // client-go's lock client: each request within half the renew deadline, at least 1 s.
  const requestTimeoutMs = Math.max(renewDeadlineMs / 2, 1000);
  const lease = (method: string, at: string, body?: { contentType: string; value: unknown }) =>
    kubeRequest(kc, method, at, body, requestTimeoutMs);
  let leader = false;
  let lastRenew = 0;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  /** Steps a leader down once `renewDeadlineMs` passed since its last renewal, whatever is in flight. */
  let deadlineTimer: NodeJS.Timeout | undefined;
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

  const armDeadline = (ms: number): void => {
    deadlineTimer = setTimeout(checkDeadline, ms);
    deadlineTimer.unref();
  };
  const checkDeadline = (): void => {
    if (!leader) return;
    // A timer may fire a millisecond before the wall clock says the time is up: wait for the rest.
    const left = renewDeadlineMs - (Date.now() - lastRenew);
    if (left > 0) {
      armDeadline(left);
      return;
    }
    logger.warn(
      { lease: `${namespace}/${name}`, renewDeadlineMs },
      "lease not renewed within the renew deadline: stepping down",
    );
    setLeader(false);
  };
  const renewed = (): void => {
    lastRenew = Date.now();
    setLeader(true);
    clearTimeout(deadlineTimer);
    if (leader) armDeadline(renewDeadlineMs);
  };

  const attempt = async (): Promise<void> => {
    const now = new Date();
    let current: Lease | undefined;
    try {
      current = (await lease("GET", `${path}/${name}`)) as Lease;
    } catch (err) {
      if (!(err instanceof KubeRequestError && err.statusCode === 404)) throw err;
    }
    const spec = {
      holderIdentity: options.identity,
      leaseDurationSeconds: duration,
      renewTime: microTime(now),
    };
    if (current === undefined) {
      await lease("POST", path, {
        contentType: "application/json",
        value: {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name, namespace },
          spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 },
        },
      });
      renewed();
      return;
    }
    const holder = current.spec?.holderIdentity;
    if (holder !== options.identity && holder !== undefined && holder !== "") {
      // Expiry is judged by how long this replica has seen the same renewTime, not by comparing clocks.
      const renewTime = current.spec?.renewTime;
      if (observed === undefined || observed.renewTime !== renewTime || observed.holder !== holder) {
        observed = { renewTime, holder, at: Date.now() };
      }
      const heldFor = (current.spec?.leaseDurationSeconds ?? duration) * 1000;
      if (Date.now() - observed.at < heldFor) {
        setLeader(false);
        return;
      }
    }
    const taking = holder !== options.identity;
    await lease("PUT", `${path}/${name}`, {
      contentType: "application/json",
      value: {
        ...current,
        spec: {
          ...current.spec,
          ...spec,
          ...(taking
            ? { acquireTime: microTime(now), leaseTransitions: (current.spec?.leaseTransitions ?? 0) + 1 }
            : {}),
        },
      },
    });
    renewed();
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
      clearTimeout(deadlineTimer);
      // An attempt in flight may still take or renew the lease: release after it.
      await inflight.catch(() => undefined);
      setLeader(false);
      // Released, so a successor need not wait out the lease.
      try {
        const held = (await lease("GET", `${path}/${name}`)) as Lease;
        if (held.spec?.holderIdentity === options.identity) {
          await lease("PUT", `${path}/${name}`, {
            contentType: "application/json",
            value: { ...held, spec: { ...held.spec, holderIdentity: "", leaseDurationSeconds: 1 } },
          });
        }
      } catch (err) {
        logger.warn({ err: err instanceof Error ? err.message : String(err) }, "lease release failed");
      }
    },
  };
}
