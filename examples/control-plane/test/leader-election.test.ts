// The Lease election against the fake API server: one leader, handover on release, takeover of a
// lease whose holder stopped renewing (judged on this replica's clock), and stepping down when another
// holder appears.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { type LeaderElection, startLeaderElection } from "../src/sources/leader-election.js";
import { noopLogger } from "../src/telemetry.js";
import { createFakeApiServer, type FakeApiServer } from "./fake-apiserver/fake-apiserver.js";

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("leader election over a Lease", { timeout: 60_000 }, () => {
  let server: FakeApiServer;
  let kc: KubeConfig;
  const running: LeaderElection[] = [];

  before(async () => {
    server = await createFakeApiServer();
    kc = new KubeConfig();
    kc.loadFromString(server.kubeconfig());
  });
  after(async () => {
    for (const e of running) await e.stop();
    await server.close();
  });

  function elect(
    identity: string,
    name: string,
    events: string[] = [],
    ledAt: number[] = [],
  ): LeaderElection {
    const e = startLeaderElection({
      kubeConfig: kc,
      identity,
      name,
      // Long enough that a stalled test process does not lose a lease it holds: no test here waits
      // for one of these to expire (the expiry test's lease is written with a 1 s duration of its own,
      // and that is the one the taker judges by). A short retry period makes each change seen quickly.
      leaseDurationSeconds: 15,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 50,
      onStartedLeading: () => {
        events.push(`${identity} leads`);
        ledAt.push(Date.now());
      },
      onStoppedLeading: () => events.push(`${identity} stops`),
    });
    running.push(e);
    return e;
  }

  it("elects one of two, and hands over when the leader releases the lease", async () => {
    const events: string[] = [];
    const a = elect("a", "handover", events);
    await until("a leads", () => a.isLeader());
    const b = elect("b", "handover", events);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(b.isLeader(), false, "b waits while a renews");
    await a.stop();
    await until("b leads", () => b.isLeader(), 5_000);
    assert.deepEqual(events, ["a leads", "a stops", "b leads"]);
    const lease = server.get("coordination.k8s.io/v1", "Lease", "handover", "istio-system");
    assert.equal((lease?.spec as { holderIdentity?: string }).holderIdentity, "b");
    assert.equal((lease?.spec as { leaseTransitions?: number }).leaseTransitions, 1);
  });

  it("takes over a lease whose holder stopped renewing, whatever the holder's clock said", async () => {
    // A dead holder whose renewTime is in the future by this machine's clock.
    server.apply({
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { name: "expiry", namespace: "istio-system" },
      spec: {
        holderIdentity: "dead",
        leaseDurationSeconds: 1,
        renewTime: new Date(Date.now() + 3_600_000).toISOString(),
      },
    });
    const started = Date.now();
    const ledAt: number[] = [];
    const c = elect("c", "expiry", [], ledAt);
    await until("c takes over", () => c.isLeader(), 10_000);
    // c first saw the lease after `started`, and takes it only once it has seen the same renewTime for
    // the lease's full duration (1 s): measured when c started leading, not when this test looked.
    assert.equal(ledAt.length, 1);
    assert.ok((ledAt[0] as number) - started >= 1000, `took over after ${(ledAt[0] as number) - started} ms`);
  });

  it("steps down once its renew deadline passed, while its renewal is still waiting for an answer", async () => {
    const events: string[] = [];
    const warnings: string[] = [];
    const e = startLeaderElection({
      kubeConfig: kc,
      identity: "hung",
      name: "hung-lease",
      leaseDurationSeconds: 15,
      renewDeadlineMs: 400,
      retryPeriodMs: 50,
      onStartedLeading: () => events.push("leads"),
      onStoppedLeading: () => events.push("stops"),
      logger: { ...noopLogger, warn: (_obj: object, msg?: string) => warnings.push(msg ?? "") },
    });
    running.push(e);
    await until("leading", () => e.isLeader());
    // The apiserver stops answering the Lease: a renewal is sent and hangs (each request would give up
    // only after 1 s, at least).
    server.holdRequests((r) => r.path.endsWith("/leases/hung-lease"));
    const heldAt = Date.now();
    try {
      await until("a renewal held", () => server.heldRequestCount() > 0, 2000);
      await until("stepped down", () => !e.isLeader(), 5000);
      const tookMs = Date.now() - heldAt;
      assert.ok(tookMs < 5000, `stepped down ${tookMs} ms after the Lease stopped answering`);
      // By the deadline's own timer, while the renewal still waited (a request gives up after 1 s at
      // least): its warning comes before any failed attempt's.
      assert.equal(warnings[0], "lease not renewed within the renew deadline: stepping down");
      assert.deepEqual(events, ["leads", "stops"]);
    } finally {
      server.holdRequests(undefined);
    }
    // Once the apiserver answers again it leads again: nobody else took the lease.
    await until("leading again", () => e.isLeader());
    assert.deepEqual(events, ["leads", "stops", "leads"]);
  });

  it("steps down when another holder renews the lease", async () => {
    const d = elect("d", "contested");
    await until("d leads", () => d.isLeader());
    const lease = server.get("coordination.k8s.io/v1", "Lease", "contested", "istio-system");
    assert.ok(lease);
    server.apply({
      ...lease,
      spec: {
        ...(lease.spec as object),
        holderIdentity: "other",
        leaseDurationSeconds: 30,
        renewTime: new Date().toISOString(),
      },
    });
    await until("d steps down", () => !d.isLeader());
  });
});
