// Where the control plane's Kubernetes objects come from. The translation to Address, Authorization and
// Envoy resources reads a snapshot of objects and never learns which source produced it, so a folder of
// YAML and a live cluster give the same xDS for the same objects.
import type { ManifestError } from "../last-good.js";
import type { KubeObject } from "../manifests.js";

/** One object added, changed or removed since the last snapshot the control plane accepted. */
export interface ObjectChange {
  /** `kind/namespace/name` (`objectId`). */
  readonly id: string;
  readonly kind: string;
  /** The object served until now; undefined when it is new. */
  readonly before: KubeObject | undefined;
  /** The object served from now on; undefined when it is gone. */
  readonly after: KubeObject | undefined;
}

/** The objects a source holds at one moment. */
export interface ConfigSnapshot {
  /**
   * The objects to translate, in an order that does not depend on arrival order. A source may build
   * the list on first read (a getter), so that a reload translated from `changes` never walks it.
   */
  readonly objects: KubeObject[];
  /**
   * What differs from the last accepted snapshot, when the source knows it (informer events, a diff
   * of the folder): `objects` is that snapshot with these changes applied, every other object being
   * the same object as before. Undefined when the source does not know (its first snapshot): the
   * control plane then translates every object.
   */
  readonly changes?: readonly ObjectChange[];
  /** Edits the source did not apply (a file that does not parse, an invalid object), with what it serves instead. */
  errors: ManifestError[];
  /**
   * Called once the snapshot has been translated and served: a source that keeps a last good state
   * (the folder source) adopts this snapshot as it. Not called when serving failed.
   */
  accept(): void;
}

/**
 * A feed of Kubernetes objects. The control plane owns the source it is given: it calls `snapshot()`
 * for every reload, `start()` once it serves, and `close()` when it stops.
 */
export interface ConfigSource {
  /** What the source reads, for logs: `folder /path/to/mesh`, `kubernetes https://10.0.0.1:443`. */
  readonly description: string;
  /**
   * The current objects. Rejects with a `ControlPlaneError` (`ERR_CONTROL_PLANE_CONFIG`) when nothing
   * can be read at all (a missing folder); a problem with single objects is in `errors` instead.
   */
  snapshot(): Promise<ConfigSnapshot>;
  /**
   * Starts reporting changes: `onChange` is called (already debounced by the source) whenever a new
   * `snapshot()` may differ from the last one. Called at most once.
   */
  start(onChange: () => void): void;
  /** Stops watching and releases what the source holds. */
  close(): Promise<void>;
}
