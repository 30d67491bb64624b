import { EventEmitter } from "node:events";
import { createCsr } from "./csr.js";
import { SpiffeError } from "./errors.js";
import { generateKeyPair, type KeyAlgorithm } from "./key-pair.js";
import { invalidOption, MAX_TIMER_DELAY_MS, msOption, numberOption } from "./options.js";
import { SpiffeId } from "./spiffe-id.js";
import { type Logger, type MetricsSink, noopLogger, noopMetrics } from "./telemetry.js";
import { type X509Svid, x509SvidFromChain } from "./x509-svid.js";

/** What the secret manager needs from a CA client; a `CertificateServiceClient` fits. */
export interface CertificateRequester {
  createCertificate(
    csrPem: string,
    options?: { validitySeconds?: number; impersonatedIdentity?: SpiffeId | string },
  ): Promise<string[]>;
}

/** Timer functions, replaceable in tests. */
export interface SecretManagerTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Options of {@link SecretManager}. */
export interface SecretManagerOptions {
  /** The CA client: an object with a `createCertificate` method. Required. */
  client: CertificateRequester;
  /**
   * Requested certificate lifetime. Default 24 h; ztunnel `SECRET_TTL`. At least 60 s
   * ({@link MIN_TTL_SECONDS}); renewal follows the lifetime the CA actually grants, not this value.
   */
  ttlSeconds?: number;
  /** Workload key algorithm. Default `ECDSA_P256`, as ztunnel. */
  keyAlgorithm?: KeyAlgorithm;
  /**
   * Ask for certificates on behalf of other workloads (node agent mode): each request names the
   * identity it wants in `ImpersonatedIdentity`. Default false: the CA certifies the caller's own
   * identity, the one its credential proves, as for a workload or a waypoint with its own token.
   * istiod refuses any `ImpersonatedIdentity`, even the caller's own, unless the caller is a trusted
   * node agent (`CA_TRUSTED_NODE_ACCOUNTS`). ztunnel: true in shared (node proxy) mode only.
   */
  impersonate?: boolean;
  /**
   * Renew when this fraction of the granted lifetime has passed. Default 0.5 (ztunnel renews at
   * half-life); Istio `SECRET_GRACE_PERIOD_RATIO`. Between 0 and 1, exclusive.
   */
  renewRatio?: number;
  /** Random spread added to `renewRatio`, +/-. Default 0.01, as Istio's agent. */
  renewJitterRatio?: number;
  /**
   * Shortest time between two certificates for one identity, whatever lifetime the CA grants.
   * Default 5 s; at most 2^31-1 ms. A CA that answers with (nearly) expired certificates then costs one request per
   * identity per interval, not a request storm.
   */
  minRenewalDelayMs?: number;
  /** First retry delay after a failed fetch. Default 1 s; doubles up to `maxBackoffMs`. */
  initialBackoffMs?: number;
  /** Longest retry delay. Default 5 min; at most 2^31-1 ms (about 24.8 days). */
  maxBackoffMs?: number;
  /** Fetches running at once. Default 8, as ztunnel's certificate fetcher. */
  maxConcurrentFetches?: number;
  /** Clock in ms. Default `Date.now`. */
  now?: () => number;
  /** Default: Node's `setTimeout`/`clearTimeout` with unref'd timers. */
  timers?: SecretManagerTimers;
  /** Random source in [0, 1). Default `Math.random`. */
  random?: () => number;
  logger?: Logger;
  metrics?: MetricsSink;
}

/** Payload of the `rotated` event. */
export interface SvidRotatedEvent {
  identity: SpiffeId;
  svid: X509Svid;
  /** The certificate it replaces, if any. */
  previous?: X509Svid;
}

/** Payload of the `fetchFailed` event. */
export interface SvidFetchFailedEvent {
  identity: SpiffeId;
  error: unknown;
  /** Delay before the next attempt. */
  retryInMs: number;
}

interface Entry {
  identity: SpiffeId;
  svid?: X509Svid;
  inflight?: Promise<X509Svid>;
  timer?: unknown;
  failures: number;
  /** Why the last fetch failed, while a back-off retry is scheduled. */
  lastError?: unknown;
  /** When (clock ms) the current certificate arrived. */
  receivedAt?: number;
}

/** Shortest `ttlSeconds` a {@link SecretManager} accepts. */
export const MIN_TTL_SECONDS = 60;

const KEY_ALGORITHMS: readonly KeyAlgorithm[] = [
  "ECDSA_P256",
  "ECDSA_P384",
  "RSA_2048",
  "RSA_3072",
  "RSA_4096",
];

/** Fetch priorities, as ztunnel's: renewals wait behind prefetches, which wait behind live requests. */
const PRIORITY = { background: 0, warmup: 1, realTime: 2 } as const;

const defaultTimers: SecretManagerTimers = {
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout(handle) {
    clearTimeout(handle as NodeJS.Timeout);
  },
};

/**
 * Keeps one X.509-SVID per identity: fetches on first use (or ahead of it with `prefetch`),
 * serves waiting requests before prefetches and renewals, de-duplicates concurrent requests,
 * renews at half of the lifetime the CA granted (with jitter, never sooner than `minRenewalDelayMs`
 * after the last certificate; a renewal further away than a Node timer can wait, 2^31-1 ms, is
 * waited for in steps), retries with exponential back-off while keeping a still-valid
 * certificate, emits `rotated` on each new certificate, and drops an identity on `forget`.
 *
 * Events: `rotated` ({@link SvidRotatedEvent}), `fetchFailed` ({@link SvidFetchFailedEvent}).
 */
export class SecretManager extends EventEmitter {
  readonly #options: SecretManagerOptions;
  readonly #entries = new Map<string, Entry>();
  readonly #queue: Array<{ priority: number; start: () => void }> = [];
  readonly #timers: SecretManagerTimers;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #logger: Logger;
  readonly #fetches: ReturnType<MetricsSink["counter"]>;
  readonly #errors: ReturnType<MetricsSink["counter"]>;
  readonly #ttlSeconds: number;
  readonly #renewRatio: number;
  readonly #renewJitterRatio: number;
  readonly #minRenewalDelayMs: number;
  readonly #initialBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #maxConcurrentFetches: number;
  #running = 0;
  #closed = false;

  /**
   * @throws SpiffeError `ERR_OPTIONS_INVALID` when `client` is missing or an option is out of range or
   *   of the wrong type.
   */
  constructor(options: SecretManagerOptions) {
    super();
    checkFunctions(options);
    this.#options = options;
    this.#ttlSeconds = numberOption(SCOPE, "ttlSeconds", options.ttlSeconds, 86_400, {
      min: MIN_TTL_SECONDS,
    });
    this.#renewRatio = numberOption(SCOPE, "renewRatio", options.renewRatio, 0.5, { above: 0, below: 1 });
    this.#renewJitterRatio = numberOption(SCOPE, "renewJitterRatio", options.renewJitterRatio, 0.01, {
      min: 0,
      below: Math.min(this.#renewRatio, 1 - this.#renewRatio),
    });
    this.#minRenewalDelayMs = msOption(SCOPE, "minRenewalDelayMs", options.minRenewalDelayMs, 5_000, {
      above: 0,
      // The floor must leave the renewal inside the lifetime asked for.
      below: this.#ttlSeconds * 1000 * (this.#renewRatio - this.#renewJitterRatio),
    });
    this.#initialBackoffMs = msOption(SCOPE, "initialBackoffMs", options.initialBackoffMs, 1_000, {
      above: 0,
    });
    this.#maxBackoffMs = msOption(SCOPE, "maxBackoffMs", options.maxBackoffMs, 300_000, {
      min: this.#initialBackoffMs,
    });
    this.#maxConcurrentFetches = numberOption(
      SCOPE,
      "maxConcurrentFetches",
      options.maxConcurrentFetches,
      8,
      {
        min: 1,
        integer: true,
      },
    );
    this.#timers = options.timers ?? defaultTimers;
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
    this.#logger = options.logger ?? noopLogger;
    const metrics = options.metrics ?? noopMetrics;
    this.#fetches = metrics.counter("workload_certificate_fetches_total", "Certificate fetches started");
    this.#errors = metrics.counter(
      "workload_certificate_fetch_errors_total",
      "Certificate fetches that failed",
    );
  }

  /**
   * The current SVID of `identity`, fetching it when there is none or it has expired. Concurrent
   * calls share one fetch. While a failed fetch waits for its back-off retry, calls reject at once
   * with that failure instead of asking the CA again (`forget()` the identity to start over).
   */
  fetch(identity: SpiffeId | string): Promise<X509Svid> {
    if (this.#closed) return Promise.reject(new SpiffeError("ERR_CLOSED", "secret manager is closed"));
    // The common call, once per connection a proxy opens: an identity held by its canonical text, with a
    // certificate still valid, is answered without parsing the ID again.
    if (typeof identity === "string") {
      const held = this.#entries.get(identity)?.svid;
      if (held !== undefined && held.notAfter.getTime() > this.#now()) return Promise.resolve(held);
    }
    let id: SpiffeId;
    try {
      id = toSpiffeId(identity);
    } catch (err) {
      return Promise.reject(err);
    }
    const key = id.toString();
    let entry = this.#entries.get(key);
    if (!entry) {
      entry = { identity: id, failures: 0 };
      this.#entries.set(key, entry);
    }
    if (entry.svid && entry.svid.notAfter.getTime() > this.#now()) return Promise.resolve(entry.svid);
    if (entry.inflight === undefined && entry.lastError !== undefined) return Promise.reject(entry.lastError);
    if (entry.inflight === undefined && this.#tooSoon(entry)) {
      const svid = entry.svid as X509Svid;
      return Promise.reject(
        new SpiffeError(
          "ERR_CERT_EXPIRED",
          `certificate of ${key} expired at ${svid.notAfter.toISOString()}; the CA granted a shorter ` +
            `lifetime than the ${this.#minRenewalDelayMs} ms between renewals, next renewal is scheduled`,
          { identity: key, notAfter: svid.notAfter },
        ),
      );
    }
    return this.#refresh(entry, PRIORITY.realTime);
  }

  /**
   * Starts fetching `identity` ahead of its first use (for example when a workload with that identity
   * appears on this node), queued behind requests that something is waiting for.
   */
  prefetch(identity: SpiffeId | string): void {
    let id: SpiffeId;
    try {
      id = toSpiffeId(identity);
    } catch {
      return;
    }
    if (this.#closed) return;
    const key = id.toString();
    let entry = this.#entries.get(key);
    if (!entry) {
      entry = { identity: id, failures: 0 };
      this.#entries.set(key, entry);
    }
    if (entry.svid && entry.svid.notAfter.getTime() > this.#now()) return;
    // A failed fetch already has its retry scheduled, and so has a certificate that expired early.
    if (entry.inflight === undefined && (entry.lastError !== undefined || this.#tooSoon(entry))) return;
    this.#refresh(entry, PRIORITY.warmup).catch(() => {});
  }

  /**
   * The cached SVID of `identity`, without fetching.
   * @throws SpiffeError `ERR_SPIFFE_ID_INVALID` when `identity` is not a SPIFFE ID.
   */
  get(identity: SpiffeId | string): X509Svid | undefined {
    return this.#entries.get(toSpiffeId(identity).toString())?.svid;
  }

  /** Identities currently tracked. */
  identities(): SpiffeId[] {
    return [...this.#entries.values()].map((e) => e.identity);
  }

  /**
   * Stops tracking `identity`: cancels its renewal and drops its certificate.
   * @throws SpiffeError `ERR_SPIFFE_ID_INVALID` when `identity` is not a SPIFFE ID.
   */
  forget(identity: SpiffeId | string): boolean {
    const key = toSpiffeId(identity).toString();
    const entry = this.#entries.get(key);
    if (!entry) return false;
    if (entry.timer !== undefined) this.#timers.clearTimeout(entry.timer);
    this.#entries.delete(key);
    return true;
  }

  /** Forgets every identity and refuses further fetches. */
  close(): void {
    this.#closed = true;
    for (const [key, entry] of [...this.#entries]) {
      if (entry.timer !== undefined) this.#timers.clearTimeout(entry.timer);
      this.#entries.delete(key);
    }
    this.#queue.length = 0;
  }

  #refresh(entry: Entry, priority: number): Promise<X509Svid> {
    if (entry.inflight) return entry.inflight;
    if (entry.timer !== undefined) {
      this.#timers.clearTimeout(entry.timer);
      entry.timer = undefined;
    }
    const p = this.#withSlot(priority, () => this.#request(entry.identity)).then(
      (svid) => {
        entry.inflight = undefined;
        if (this.#entries.get(entry.identity.toString()) !== entry) return svid;
        const previous = entry.svid;
        entry.svid = svid;
        entry.receivedAt = this.#now();
        entry.failures = 0;
        entry.lastError = undefined;
        this.#scheduleRenewal(entry);
        const event: SvidRotatedEvent = { identity: entry.identity, svid, ...(previous ? { previous } : {}) };
        this.emit("rotated", event);
        return svid;
      },
      (err: unknown) => {
        entry.inflight = undefined;
        this.#errors.inc();
        if (this.#entries.get(entry.identity.toString()) === entry && !this.#closed) {
          entry.failures++;
          entry.lastError = err;
          const delay = Math.min(
            this.#maxBackoffMs,
            this.#initialBackoffMs * 2 ** Math.min(entry.failures - 1, 40),
          );
          entry.timer = this.#timers.setTimeout(() => {
            entry.timer = undefined;
            this.#refresh(entry, PRIORITY.background).catch(() => {});
          }, delay);
          this.#logger.warn(
            { identity: entry.identity.toString(), err, retryInMs: delay },
            "certificate fetch failed",
          );
          const event: SvidFetchFailedEvent = { identity: entry.identity, error: err, retryInMs: delay };
          this.emit("fetchFailed", event);
        }
        // A still-valid certificate keeps serving while retries run.
        if (entry.svid && entry.svid.notAfter.getTime() > this.#now()) return entry.svid;
        throw err;
      },
    );
    entry.inflight = p;
    return p;
  }

  /** True while the last certificate of `entry` is younger than `minRenewalDelayMs`. */
  #tooSoon(entry: Entry): boolean {
    return (
      entry.svid !== undefined &&
      entry.receivedAt !== undefined &&
      this.#now() - entry.receivedAt < this.#minRenewalDelayMs
    );
  }

  #scheduleRenewal(entry: Entry): void {
    const svid = entry.svid;
    if (!svid || entry.receivedAt === undefined) return;
    const delay = renewalDelayMs({
      notBefore: svid.notBefore.getTime(),
      notAfter: svid.notAfter.getTime(),
      receivedAt: entry.receivedAt,
      now: this.#now(),
      ratio: this.#renewRatio + (this.#random() * 2 - 1) * this.#renewJitterRatio,
      minDelayMs: this.#minRenewalDelayMs,
    });
    this.#armRenewal(entry, delay, this.#now() + delay);
  }

  /**
   * Renews `entry` after `remainingMs`, when the clock reaches `dueAt`. A timer waits at most
   * {@link MAX_TIMER_DELAY_MS} (Node fires a longer one after 1 ms), so a longer wait is made of
   * steps, each re-armed for what is left and none shorter than `minRenewalDelayMs`. What is left is
   * read from the clock, and shrinks by at least each step, so a clock that stands still cannot
   * postpone the renewal for good.
   */
  #armRenewal(entry: Entry, remainingMs: number, dueAt: number): void {
    const step = Math.min(MAX_TIMER_DELAY_MS, Math.max(this.#minRenewalDelayMs, remainingMs));
    entry.timer = this.#timers.setTimeout(() => {
      entry.timer = undefined;
      if (this.#entries.get(entry.identity.toString()) !== entry) return;
      const left = Math.min(dueAt - this.#now(), remainingMs - step);
      if (left > 0) this.#armRenewal(entry, left, dueAt);
      else this.#refresh(entry, PRIORITY.background).catch(() => {});
    }, step);
  }

  async #withSlot<T>(priority: number, fn: () => Promise<T>): Promise<T> {
    const limit = this.#maxConcurrentFetches;
    if (this.#running >= limit) {
      await new Promise<void>((start) => {
        // Higher priority first; first come, first served within a priority.
        const at = this.#queue.findIndex((w) => w.priority < priority);
        if (at === -1) this.#queue.push({ priority, start });
        else this.#queue.splice(at, 0, { priority, start });
      });
    }
    this.#running++;
    try {
      return await fn();
    } finally {
      this.#running--;
      this.#queue.shift()?.start();
    }
  }

  async #request(identity: SpiffeId): Promise<X509Svid> {
    this.#fetches.inc();
    const keys = await generateKeyPair({ algorithm: this.#options.keyAlgorithm ?? "ECDSA_P256" });
    const csr = await createCsr({ spiffeId: identity, privateKeyPem: keys.privateKeyPem });
    const chain = await this.#options.client.createCertificate(csr, {
      validitySeconds: this.#ttlSeconds,
      ...(this.#options.impersonate === true ? { impersonatedIdentity: identity } : {}),
    });
    const svid = x509SvidFromChain(chain, keys.privateKeyPem);
    if (!svid.spiffeId.equals(identity)) {
      // Without impersonation the CA certifies whoever the credential proves: asking for another
      // identity is a setup mistake more often than a broken CA, so the message says which.
      const hint =
        this.#options.impersonate === true
          ? ""
          : "; without impersonate: true the CA certifies the identity of the caller's credential " +
            "(a node agent asking for workloads sets impersonate: true)";
      throw new SpiffeError(
        "ERR_CA_RESPONSE_INVALID",
        `CA certified ${svid.spiffeId}, not the requested ${identity}${hint}`,
        { requested: identity.toString(), certified: svid.spiffeId.toString() },
      );
    }
    return svid;
  }
}

/**
 * Milliseconds until a certificate is renewed: when `ratio` of the lifetime the CA granted has passed.
 * That lifetime runs from NotBefore, or from arrival when NotBefore is earlier (CAs backdate it to
 * absorb clock skew, istiod by 2 min, which would otherwise eat short lifetimes whole), to NotAfter.
 * Never less than `minDelayMs`, so a short or already expired certificate cannot trigger a burst.
 */
export function renewalDelayMs(input: {
  notBefore: number;
  notAfter: number;
  receivedAt: number;
  now: number;
  ratio: number;
  minDelayMs: number;
}): number {
  const start = Math.max(input.notBefore, input.receivedAt);
  const life = Math.max(0, input.notAfter - start);
  const at = start + life * input.ratio;
  const delay = at - input.now;
  return Number.isFinite(delay) ? Math.max(input.minDelayMs, delay) : input.minDelayMs;
}

const SCOPE = "SecretManager";

/** Refuses a missing client and options that must be functions, objects or flags but are not. */
function checkFunctions(options: SecretManagerOptions): void {
  if (typeof options !== "object" || options === null) {
    throw invalidOption(SCOPE, "argument", "an options object", options);
  }
  const client = options.client as Partial<CertificateRequester> | null | undefined;
  if (typeof client !== "object" || client === null || typeof client.createCertificate !== "function") {
    throw invalidOption(SCOPE, "client", "an object with a createCertificate method", options.client);
  }
  if (options.keyAlgorithm !== undefined && !KEY_ALGORITHMS.includes(options.keyAlgorithm)) {
    throw invalidOption(SCOPE, "keyAlgorithm", `one of ${KEY_ALGORITHMS.join(", ")}`, options.keyAlgorithm);
  }
  if (options.impersonate !== undefined && typeof options.impersonate !== "boolean") {
    throw invalidOption(SCOPE, "impersonate", "a boolean", options.impersonate);
  }
  for (const name of ["now", "random"] as const) {
    if (options[name] !== undefined && typeof options[name] !== "function") {
      throw invalidOption(SCOPE, name, "a function", options[name]);
    }
  }
  const timers = options.timers as Partial<SecretManagerTimers> | null | undefined;
  if (
    timers !== undefined &&
    (typeof timers !== "object" ||
      timers === null ||
      typeof timers.setTimeout !== "function" ||
      typeof timers.clearTimeout !== "function")
  ) {
    throw invalidOption(SCOPE, "timers", "an object with setTimeout and clearTimeout", options.timers);
  }
}

/**
 * `identity` as a SpiffeId: a string is parsed, and so is the text of a SpiffeId (which may come
 * from another copy of this package).
 * @throws SpiffeError `ERR_SPIFFE_ID_INVALID`
 */
function toSpiffeId(identity: unknown): SpiffeId {
  if (identity instanceof SpiffeId) return identity;
  if (typeof identity === "string") return SpiffeId.parse(identity);
  const candidate = identity as { trustDomain?: unknown; path?: unknown } | null | undefined;
  if (
    typeof candidate === "object" &&
    candidate !== null &&
    typeof candidate.trustDomain === "string" &&
    typeof candidate.path === "string"
  ) {
    return SpiffeId.parse(String(candidate));
  }
  throw new SpiffeError(
    "ERR_SPIFFE_ID_INVALID",
    `identity must be a SpiffeId or a SPIFFE ID string, got ${identity === null ? "null" : typeof identity}`,
    { reason: "not a SPIFFE ID" },
  );
}
