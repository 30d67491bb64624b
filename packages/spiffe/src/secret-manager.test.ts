import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { type CertificateAuthority, createCertificateAuthority } from "./certificate-authority.js";
import { SpiffeError } from "./errors.js";
import {
  type CertificateRequester,
  MIN_TTL_SECONDS,
  renewalDelayMs,
  SecretManager,
  type SvidFetchFailedEvent,
  type SvidRotatedEvent,
} from "./secret-manager.js";
import { SpiffeId } from "./spiffe-id.js";

const WEB = "spiffe://cluster.local/ns/default/sa/web";
const T0 = Date.parse("2030-01-01T00:00:00Z");
/** Longest delay Node's setTimeout waits; a longer one fires after 1 ms. */
const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

class FakeTimers {
  now = T0;
  readonly pending = new Map<number, { fn: () => void; at: number; delay: number }>();
  #next = 1;
  setTimeout = (fn: () => void, ms: number): unknown => {
    const id = this.#next++;
    this.pending.set(id, { fn, at: this.now + ms, delay: ms });
    return id;
  };
  clearTimeout = (handle: unknown): void => {
    this.pending.delete(handle as number);
  };
  only(): { at: number; delay: number } {
    assert.equal(this.pending.size, 1, "exactly one timer pending");
    return [...this.pending.values()][0] as { at: number; delay: number };
  }
  /** Moves the clock to the next timer and runs it. */
  fireNext(): void {
    const [id, t] = [...this.pending.entries()].sort((a, b) => a[1].at - b[1].at)[0] ?? [];
    assert.ok(t && id !== undefined, "a timer is pending");
    this.pending.delete(id);
    this.now = Math.max(this.now, t.at);
    t.fn();
  }
}

function nextEvent<T>(manager: SecretManager, name: string): Promise<T> {
  return new Promise((resolve) => manager.once(name, resolve));
}

describe("SecretManager", () => {
  let timers: FakeTimers;
  let ca: CertificateAuthority;
  before(async () => {
    timers = new FakeTimers();
    ca = await createCertificateAuthority({ clock: () => new Date(timers.now) });
  });

  function requester(
    opts: { fail?: number; calls?: string[]; identity?: string } = {},
  ): CertificateRequester {
    let failures = opts.fail ?? 0;
    return {
      async createCertificate(csr, options) {
        opts.calls?.push(String(options?.impersonatedIdentity));
        if (failures > 0) {
          failures--;
          throw new SpiffeError("ERR_CA_UNAVAILABLE", "CA down");
        }
        if (opts.identity) {
          const other = await ca.issue({ spiffeId: opts.identity });
          return [other.certChainPem, ...other.rootsPem];
        }
        const signed = await ca.sign(csr, {
          spiffeId: String(options?.impersonatedIdentity),
          ttlSeconds: options?.validitySeconds ?? 0,
        });
        return signed.certChain;
      },
    };
  }

  function manager(
    client: CertificateRequester,
    extra: Partial<ConstructorParameters<typeof SecretManager>[0]> = {},
  ) {
    // Node agent mode unless a test says otherwise: `requester` certifies the impersonated identity.
    return new SecretManager({
      client,
      timers,
      now: () => timers.now,
      random: () => 0.5,
      impersonate: true,
      ...extra,
    });
  }

  /** A CA client for a caller authenticated as `caller`: it certifies `caller` unless asked to impersonate. */
  function selfRequester(
    caller: string,
    seen: Array<Record<string, unknown> | undefined>,
  ): CertificateRequester {
    return {
      async createCertificate(csr, options) {
        seen.push(options === undefined ? undefined : { ...options });
        const signed = await ca.sign(csr, {
          spiffeId: String(options?.impersonatedIdentity ?? caller),
          ttlSeconds: options?.validitySeconds ?? 0,
          ignoreCsrSans: true,
        });
        return signed.certChain;
      },
    };
  }

  it("asks for the caller's own identity without ImpersonatedIdentity by default, as a workload", async () => {
    timers.pending.clear();
    const seen: Array<Record<string, unknown> | undefined> = [];
    const m = new SecretManager({
      client: selfRequester(WEB, seen),
      timers,
      now: () => timers.now,
      random: () => 0.5,
    });
    const svid = await m.fetch(WEB);
    assert.equal(svid.spiffeId.toString(), WEB);
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0], { validitySeconds: 86_400 });
    m.close();
  });

  it("sends ImpersonatedIdentity for every identity with impersonate: true, as a node agent", async () => {
    timers.pending.clear();
    const seen: Array<Record<string, unknown> | undefined> = [];
    const ZTUNNEL = "spiffe://cluster.local/ns/istio-system/sa/ztunnel";
    const m = manager(selfRequester(ZTUNNEL, seen), { impersonate: true });
    assert.equal((await m.fetch(WEB)).spiffeId.toString(), WEB);
    assert.equal(String(seen[0]?.impersonatedIdentity), WEB);
    m.close();
  });

  it("says the CA certified another identity than asked, and how to ask for one, without impersonation", async () => {
    timers.pending.clear();
    const m = manager(selfRequester(WEB, []), { impersonate: false });
    const OTHER = "spiffe://cluster.local/ns/default/sa/other";
    await assert.rejects(m.fetch(OTHER), (err: unknown) => {
      assert.ok(err instanceof SpiffeError, String(err));
      assert.equal(err.code, "ERR_CA_RESPONSE_INVALID");
      assert.match(err.message, new RegExp(`CA certified ${WEB}, not the requested ${OTHER}`));
      assert.match(err.message, /impersonate: true/);
      assert.equal(err.details.requested, OTHER);
      assert.equal(err.details.certified, WEB);
      return true;
    });
    m.close();
  });

  it("de-duplicates concurrent fetches and caches the SVID", async () => {
    timers.pending.clear();
    const calls: string[] = [];
    const m = manager(requester({ calls }));
    const [a, b] = await Promise.all([m.fetch(WEB), m.fetch(SpiffeId.parse(WEB))]);
    assert.equal(a, b);
    assert.deepEqual(calls, [WEB]);
    assert.equal(await m.fetch(WEB), a);
    assert.equal(calls.length, 1);
    assert.equal(m.get(WEB), a);
    m.close();
  });

  it("renews at half of the granted lifetime and emits rotated", async () => {
    timers.pending.clear();
    const calls: string[] = [];
    const m = manager(requester({ calls }), { ttlSeconds: 3600 });
    const first = await m.fetch(WEB);
    // The CA backdates NotBefore by 2 min; the lifetime counts from arrival (now) to NotAfter.
    assert.equal(first.notBefore.getTime(), timers.now - 120_000);
    const timer = timers.only();
    assert.equal(timer.at, timers.now + (first.notAfter.getTime() - timers.now) / 2);
    assert.equal(timer.delay, 1_800_000);
    const rotated = nextEvent<SvidRotatedEvent>(m, "rotated");
    timers.fireNext();
    const event = await rotated;
    assert.equal(event.previous, first);
    assert.notEqual(event.svid, first);
    assert.equal(m.get(WEB), event.svid);
    assert.equal(calls.length, 2);
    m.close();
    assert.equal(timers.pending.size, 0);
  });

  it("retries with exponential back-off", async () => {
    timers.pending.clear();
    const m = manager(requester({ fail: 2 }), { initialBackoffMs: 1000 });
    const failed: number[] = [];
    m.on("fetchFailed", (e: SvidFetchFailedEvent) => failed.push(e.retryInMs));
    await assert.rejects(m.fetch(WEB), { code: "ERR_CA_UNAVAILABLE" });
    assert.deepEqual(failed, [1000]);
    assert.equal(timers.only().delay, 1000);
    let next = nextEvent(m, "fetchFailed");
    timers.fireNext();
    await next;
    assert.deepEqual(failed, [1000, 2000]);
    next = nextEvent(m, "rotated");
    timers.fireNext();
    await next;
    assert.ok(m.get(WEB));
    m.close();
  });

  it("does not ask the CA again while a failed fetch waits for its retry", async () => {
    timers.pending.clear();
    const calls: string[] = [];
    const m = manager(requester({ fail: 1, calls }), { initialBackoffMs: 1000 });
    await assert.rejects(m.fetch(WEB), { code: "ERR_CA_UNAVAILABLE" });
    assert.equal(calls.length, 1);
    // Callers during the back-off get the same failure at once; prefetch waits for the retry too.
    await assert.rejects(m.fetch(WEB), { code: "ERR_CA_UNAVAILABLE" });
    await assert.rejects(m.fetch(WEB), { code: "ERR_CA_UNAVAILABLE" });
    m.prefetch(WEB);
    assert.equal(calls.length, 1, "no extra CA requests during the back-off");
    assert.equal(timers.only().delay, 1000);
    const rotated = nextEvent(m, "rotated");
    timers.fireNext();
    await rotated;
    assert.equal(calls.length, 2);
    assert.ok(await m.fetch(WEB));
    // forget() starts over: the next fetch asks the CA right away.
    m.forget(WEB);
    assert.ok(await m.fetch(WEB));
    assert.equal(calls.length, 3);
    m.close();
  });

  it("keeps serving a still-valid SVID while renewal fails", async () => {
    timers.pending.clear();
    let fail = false;
    const inner = requester();
    const m = manager({
      createCertificate: (csr, o) =>
        fail ? Promise.reject(new Error("down")) : inner.createCertificate(csr, o),
    });
    const svid = await m.fetch(WEB);
    fail = true;
    const failed = nextEvent<SvidFetchFailedEvent>(m, "fetchFailed");
    timers.fireNext();
    await failed;
    assert.equal(m.get(WEB), svid);
    assert.equal(await m.fetch(WEB), svid);
    m.close();
  });

  it("forgets an identity and cancels its renewal", async () => {
    timers.pending.clear();
    const m = manager(requester());
    await m.fetch(WEB);
    assert.equal(timers.pending.size, 1);
    assert.equal(m.forget(WEB), true);
    assert.equal(timers.pending.size, 0);
    assert.equal(m.get(WEB), undefined);
    assert.deepEqual(m.identities(), []);
    assert.equal(m.forget(WEB), false);
    m.close();
  });

  it("limits concurrent fetches", async () => {
    timers.pending.clear();
    let running = 0;
    let peak = 0;
    const gates: Array<() => void> = [];
    let gateAdded: (() => void) | undefined;
    const inner = requester();
    const m = manager(
      {
        async createCertificate(csr, o) {
          running++;
          peak = Math.max(peak, running);
          await new Promise<void>((release) => {
            gates.push(release);
            gateAdded?.();
          });
          try {
            return await inner.createCertificate(csr, o);
          } finally {
            running--;
          }
        },
      },
      { maxConcurrentFetches: 2 },
    );
    const waitForGates = async (n: number) => {
      while (gates.length < n) {
        await new Promise<void>((r) => {
          gateAdded = r;
        });
      }
    };
    const ids = [1, 2, 3, 4, 5].map((i) => `spiffe://cluster.local/ns/default/sa/w${i}`);
    const all = Promise.all(ids.map((id) => m.fetch(id)));
    await waitForGates(2);
    assert.equal(running, 2);
    // Release one fetch at a time; each release lets exactly one queued fetch in.
    for (let released = 0; released < ids.length; released++) {
      await waitForGates(1);
      gates.shift()?.();
    }
    const svids = await all;
    assert.equal(svids.length, 5);
    assert.equal(peak, 2);
    m.close();
  });

  it("serves waiting requests before prefetches", async () => {
    timers.pending.clear();
    const order: string[] = [];
    const gates: Array<() => void> = [];
    let gateAdded: (() => void) | undefined;
    const inner = requester();
    const m = manager(
      {
        async createCertificate(csr, o) {
          order.push(String(o?.impersonatedIdentity).split("/").pop() as string);
          await new Promise<void>((release) => {
            gates.push(release);
            gateAdded?.();
          });
          return inner.createCertificate(csr, o);
        },
      },
      { maxConcurrentFetches: 1 },
    );
    const waitForGate = async () => {
      while (gates.length === 0) {
        await new Promise<void>((r) => {
          gateAdded = r;
        });
      }
    };
    const first = m.fetch("spiffe://cluster.local/ns/default/sa/a");
    await waitForGate();
    m.prefetch("spiffe://cluster.local/ns/default/sa/b");
    const urgent = m.fetch("spiffe://cluster.local/ns/default/sa/c");
    for (let i = 0; i < 3; i++) {
      await waitForGate();
      gates.shift()?.();
    }
    await Promise.all([first, urgent]);
    assert.deepEqual(order, ["a", "c", "b"]);
    m.prefetch("spiffe://cluster.local/ns/default/sa/b");
    m.prefetch("not an id");
    assert.equal(order.length, 3, "a cached identity is not fetched again");
    m.close();
  });

  it("rejects an answer for the wrong identity, bad IDs and use after close", async () => {
    timers.pending.clear();
    const m = manager(requester({ identity: "spiffe://cluster.local/ns/default/sa/other" }));
    await assert.rejects(m.fetch(WEB), { code: "ERR_CA_RESPONSE_INVALID" });
    await assert.rejects(m.fetch("nope"), { code: "ERR_SPIFFE_ID_INVALID" });
    m.close();
    await assert.rejects(m.fetch(WEB), { code: "ERR_CLOSED" });
    assert.equal(timers.pending.size, 0);
  });
  /** Runs renewals for `windowMs` of fake time (at most `maxSteps` timers) and counts CA requests. */
  async function runRenewals(m: SecretManager, windowMs: number, maxSteps = 500): Promise<number> {
    const end = timers.now + windowMs;
    let steps = 0;
    while (steps < maxSteps) {
      const next = [...timers.pending.values()].sort((a, b) => a.at - b.at)[0];
      if (next === undefined || next.at > end) break;
      let settle: () => void = () => {};
      const done = new Promise<void>((resolve) => {
        settle = resolve;
      });
      m.on("rotated", settle).on("fetchFailed", settle);
      timers.fireNext();
      await done;
      m.off("rotated", settle).off("fetchFailed", settle);
      steps++;
    }
    return steps;
  }

  it("does not renew at once when the lifetime asked for is short (2 min, CA backdating 2 min)", async () => {
    timers.pending.clear();
    const calls: string[] = [];
    const m = manager(requester({ calls }), { ttlSeconds: 120 });
    const first = await m.fetch(WEB);
    assert.equal(first.notAfter.getTime() - first.notBefore.getTime(), 240_000);
    assert.equal(timers.only().delay, 60_000);
    // Ten minutes: one certificate per minute, not one per tick.
    await runRenewals(m, 600_000);
    assert.ok(calls.length >= 10 && calls.length <= 12, `${calls.length} CSRs in 10 min`);
    m.close();
  });

  it("renews on the lifetime the CA granted, not the one asked for", async () => {
    timers.pending.clear();
    const calls: string[] = [];
    const inner = requester({ calls });
    const m = manager({
      createCertificate: (csr, o) => inner.createCertificate(csr, { ...o, validitySeconds: 60 }),
    });
    const first = await m.fetch(WEB);
    assert.equal(first.notAfter.getTime() - timers.now, 60_000);
    assert.equal(timers.only().delay, 30_000);
    await runRenewals(m, 300_000);
    assert.ok(calls.length >= 10 && calls.length <= 12, `${calls.length} CSRs in 5 min`);
    m.close();
  });

  it("a CA granting 2 s certificates gets one request per minRenewalDelayMs, not a storm", async () => {
    timers.pending.clear();
    const calls: string[] = [];
    const inner = requester({ calls });
    const m = manager({
      createCertificate: (csr, o) => inner.createCertificate(csr, { ...o, validitySeconds: 2 }),
    });
    await m.fetch(WEB);
    assert.equal(timers.only().delay, 5_000);
    // Once expired, live requests fail fast instead of asking the CA again before the floor.
    timers.now += 3_000;
    await assert.rejects(m.fetch(WEB), { code: "ERR_CERT_EXPIRED" });
    m.prefetch(WEB);
    assert.equal(calls.length, 1);
    timers.now -= 3_000;
    await runRenewals(m, 60_000);
    assert.ok(calls.length >= 12 && calls.length <= 13, `${calls.length} CSRs in 60 s`);
    m.close();
  });

  it("computes renewal delays from the granted validity, with a floor", () => {
    const base = { receivedAt: 1_000_000, now: 1_000_000, ratio: 0.5, minDelayMs: 5_000 };
    // Backdated NotBefore: the lifetime counts from arrival.
    assert.equal(renewalDelayMs({ ...base, notBefore: 880_000, notAfter: 1_120_000 }), 60_000);
    // NotBefore after arrival (CA clock ahead): counts from NotBefore.
    assert.equal(renewalDelayMs({ ...base, notBefore: 1_010_000, notAfter: 1_110_000 }), 60_000);
    // Short, expired and nonsensical certificates all wait for the floor.
    assert.equal(renewalDelayMs({ ...base, notBefore: 880_000, notAfter: 1_002_000 }), 5_000);
    assert.equal(renewalDelayMs({ ...base, notBefore: 880_000, notAfter: 990_000 }), 5_000);
    assert.equal(renewalDelayMs({ ...base, notBefore: Number.NaN, notAfter: Number.NaN }), 5_000);
    // Later calls (a renewal rescheduled after a while) count down from arrival.
    assert.equal(
      renewalDelayMs({ ...base, now: 1_020_000, notBefore: 880_000, notAfter: 1_120_000 }),
      40_000,
    );
  });

  it("waits out a renewal longer than a timer can hold in steps, without asking the CA early", async () => {
    timers.pending.clear();
    const calls: string[] = [];
    const m = manager(requester({ calls }), { ttlSeconds: 60 * 86_400 });
    const first = await m.fetch(WEB);
    const due = timers.now + (first.notAfter.getTime() - timers.now) / 2;
    assert.ok(due - timers.now > MAX_TIMER_DELAY_MS, "renewal is due after more than one timer can hold");
    const rotated = nextEvent<SvidRotatedEvent>(m, "rotated");
    // Each step either re-arms the timer or starts the renewal (which arms no timer until it is done).
    for (let step = 0; step < 10 && timers.pending.size > 0; step++) {
      assert.equal(calls.length, 1, "no CA request before the renewal is due");
      const timer = timers.only();
      assert.ok(timer.delay <= MAX_TIMER_DELAY_MS, `timer of ${timer.delay} ms`);
      assert.ok(timer.delay >= 5_000, `timer of ${timer.delay} ms is below minRenewalDelayMs`);
      timers.fireNext();
      await new Promise((r) => setImmediate(r));
    }
    await rotated;
    assert.equal(calls.length, 2);
    assert.ok(timers.now >= due, "renewed when due, not before");
    m.close();
    assert.equal(timers.pending.size, 0);
  });

  it("refuses a missing client and ms options no timer can hold", () => {
    for (const options of [{}, { client: {} }, { client: null }, undefined]) {
      assert.throws(
        () => new SecretManager(options as ConstructorParameters<typeof SecretManager>[0]),
        (err: unknown) => err instanceof SpiffeError && err.code === "ERR_OPTIONS_INVALID",
        JSON.stringify(options),
      );
    }
    const client = requester();
    for (const extra of [
      { initialBackoffMs: 2 ** 31 },
      { maxBackoffMs: 1e10 },
      { ttlSeconds: 90 * 86_400, minRenewalDelayMs: 2 ** 31 },
      { initialBackoffMs: "1000" },
      { keyAlgorithm: "RSA_1024" },
      { impersonate: "no" },
      { now: 5 },
      { random: "x" },
      { timers: {} },
    ]) {
      assert.throws(
        () => manager(client, extra as Partial<ConstructorParameters<typeof SecretManager>[0]>),
        (err: unknown) => err instanceof SpiffeError && err.code === "ERR_OPTIONS_INVALID",
        JSON.stringify(extra),
      );
    }
  });

  it("rejects a missing or mistyped identity with a typed error", async () => {
    timers.pending.clear();
    const m = manager(requester());
    for (const bad of [undefined, null, 5, {}]) {
      await assert.rejects(
        m.fetch(bad as unknown as string),
        (err: unknown) => err instanceof SpiffeError && err.code === "ERR_SPIFFE_ID_INVALID",
        String(bad),
      );
      assert.throws(
        () => m.forget(bad as unknown as string),
        (err: unknown) => err instanceof SpiffeError && err.code === "ERR_SPIFFE_ID_INVALID",
      );
      assert.throws(
        () => m.get(bad as unknown as string),
        (err: unknown) => err instanceof SpiffeError && err.code === "ERR_SPIFFE_ID_INVALID",
      );
    }
    assert.equal(m.identities().length, 0);
    m.close();
  });

  it("refuses options that would renew too often or never", () => {
    const client = requester();
    const bad: Array<Partial<ConstructorParameters<typeof SecretManager>[0]>> = [
      { ttlSeconds: MIN_TTL_SECONDS - 1 },
      { ttlSeconds: 0 },
      { ttlSeconds: Number.NaN },
      { renewRatio: 0 },
      { renewRatio: 1 },
      { renewJitterRatio: -0.1 },
      { renewRatio: 0.9, renewJitterRatio: 0.2 },
      { minRenewalDelayMs: 0 },
      { ttlSeconds: 60, minRenewalDelayMs: 30_000 },
      { initialBackoffMs: 0 },
      { initialBackoffMs: 1000, maxBackoffMs: 10 },
      { maxConcurrentFetches: 0 },
      { maxConcurrentFetches: 1.5 },
    ];
    for (const extra of bad) {
      assert.throws(
        () => manager(client, extra),
        (err: unknown) => err instanceof SpiffeError && err.code === "ERR_OPTIONS_INVALID",
        JSON.stringify(extra),
      );
    }
    manager(client, { ttlSeconds: MIN_TTL_SECONDS }).close();
  });
});
