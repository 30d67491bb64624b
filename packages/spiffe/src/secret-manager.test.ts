import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { type CertificateAuthority, createCertificateAuthority } from "./certificate-authority.js";
import { SpiffeError } from "./errors.js";
import {
  type CertificateRequester,
  SecretManager,
  type SvidFetchFailedEvent,
  type SvidRotatedEvent,
} from "./secret-manager.js";
import { SpiffeId } from "./spiffe-id.js";

const WEB = "spiffe://cluster.local/ns/default/sa/web";
const T0 = Date.parse("2030-01-01T00:00:00Z");

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
    return new SecretManager({ client, timers, now: () => timers.now, random: () => 0.5, ...extra });
  }

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

  it("renews at half-life and emits rotated", async () => {
    timers.pending.clear();
    const calls: string[] = [];
    const m = manager(requester({ calls }), { ttlSeconds: 3600 });
    const first = await m.fetch(WEB);
    const life = first.notAfter.getTime() - first.notBefore.getTime();
    const timer = timers.only();
    assert.equal(timer.at, first.notBefore.getTime() + life / 2);
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
});
