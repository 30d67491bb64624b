// Gives back the memory a push leaves behind. grpc-js frames every response it sends into a buffer
// of its own, so a first push of a 3 MB Address set to 100 clients allocates 300 MB outside the JS
// heap. Those buffers are freed only when V8 next collects garbage, and a process that has gone quiet
// after its push allocates nothing and so collects nothing: the control plane could sit on hundreds
// of megabytes of dead buffers for as long as it stays idle (docs/benchmarks.md,
// `test/bench/fresh-memory.ts`). This watches for that state, ArrayBuffer memory well above what the
// last collection left, not counting the responses still on their way to clients, and then collects
// once.
import type { Logger } from "./telemetry.js";
import { noopLogger } from "./telemetry.js";

/** Options of {@link startMemoryRelease}. */
export interface MemoryReleaseOptions {
  /** A full garbage collection: `globalThis.gc`, present when Node runs with `--expose-gc`. */
  collect: () => void;
  /** ArrayBuffer bytes now (`process.memoryUsage().arrayBuffers`). */
  arrayBuffers: () => number;
  /** Bytes of xDS responses not yet let out to their clients (`XdsServer.bufferedBytes()`). */
  inFlight: () => number;
  /** Growth over the level the last collection left that makes a collection worth it. Default 16 MiB. */
  thresholdBytes?: number;
  /** How often the level is read. Default 10 s. */
  intervalMs?: number;
  logger?: Logger;
}

/** A running {@link startMemoryRelease}. */
export interface MemoryRelease {
  /** Collections it has made. */
  readonly collections: number;
  /** Stops the checks. */
  stop(): void;
}

/**
 * Every `intervalMs`, collects garbage once when ArrayBuffer memory, less the xDS responses still in
 * flight (live, a collection cannot free them), exceeds what the last collection left by
 * `thresholdBytes`. A client that stops reading therefore does not hold back the release of the other
 * clients' copies. The level after each collection is the new reference, so memory that is really in
 * use, a larger cache for instance, costs at most one collection. The timer does not keep the process
 * alive.
 */
export function startMemoryRelease(options: MemoryReleaseOptions): MemoryRelease {
  const threshold = options.thresholdBytes ?? 16 * 1024 * 1024;
  const intervalMs = options.intervalMs ?? 10_000;
  const logger = options.logger ?? noopLogger;
  // ArrayBuffer bytes besides the responses in flight.
  const held = () => options.arrayBuffers() - options.inFlight();
  let reference = held();
  let collections = 0;
  const check = () => {
    const before = held();
    if (before < reference) {
      // V8 collected on its own: what it left is the reference now.
      reference = before;
      return;
    }
    if (before - reference < threshold) return;
    options.collect();
    collections++;
    reference = held();
    logger.debug({ before, after: reference }, "collected the buffers a push left behind");
  };
  const timer = setInterval(check, intervalMs);
  timer.unref();
  return {
    get collections() {
      return collections;
    },
    stop: () => clearInterval(timer),
  };
}
