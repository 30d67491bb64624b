// The folder source: every `*.yaml` / `*.yml` / `*.json` file of one directory, re-read when the
// directory changes. An edit that does not read or validate keeps the file's last good objects
// (see last-good.ts), so a half-written policy never opens the mesh.
import { type FSWatcher, constants as fsConstants, watch } from "node:fs";
import { open, readdir } from "node:fs/promises";
import { extname, join } from "node:path";
import { ControlPlaneError } from "../errors.js";
import { applyLastGood, objectId } from "../last-good.js";
import {
  DEFAULT_MANIFEST_LIMITS,
  foreignGroupOf,
  type KubeObject,
  type ManifestLimits,
  type ParsedManifestFile,
  parseManifestFile,
  unreadableManifestFile,
} from "../manifests.js";
import { ServiceEntryAddressAllocator } from "../service-entry-addresses.js";
import type { Logger } from "../telemetry.js";
import { noopLogger } from "../telemetry.js";
import { failClosedStandIn, validateManifestObject } from "../translate-mesh.js";
import type { ConfigSnapshot, ConfigSource, ObjectChange } from "./config-source.js";

/** Default {@link FolderSourceOptions.maxDebounceMs}: 10 s. */
export const DEFAULT_MAX_DEBOUNCE_MS = 10_000;

const MANIFEST_EXTENSIONS = new Set([".yaml", ".yml", ".json"]);

/** Options of {@link createFolderSource}. */
export interface FolderSourceOptions {
  /** Directory of `*.yaml` / `*.yml` / `*.json` manifests (not recursive). Required. */
  dir: string;
  /** Limits of one manifest file. Default {@link DEFAULT_MANIFEST_LIMITS}. */
  limits?: ManifestLimits;
  /** Report changes of the directory (`fs.watch`). Default true. */
  watch?: boolean;
  /** Quiet time after the last file event before a change is reported. Default 100 ms. */
  debounceMs?: number;
  /**
   * Longest a change waits for the directory to go quiet, from its first file event: a file written
   * again and again (a tool that rewrites its output every few milliseconds) is still read at this
   * pace. Default 10 s, istiod's `PILOT_DEBOUNCE_MAX`.
   */
  maxDebounceMs?: number;
  /**
   * Give ServiceEntry hosts without addresses one from 240.240.0.0/16, recorded in the objects'
   * `status.addresses` as istiod's IP auto-allocation records them in the cluster (a status the file
   * gives wins). Default true.
   */
  allocateServiceEntryAddresses?: boolean;
  logger?: Logger;
}

async function readManifestText(path: string, maxBytes: number): Promise<string> {
  // O_NONBLOCK: opening a FIFO named like a manifest must not wait for a writer.
  const handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw new Error("not a regular file");
    const { size } = stats;
    // Not read at all when over the limit; a file still growing is caught by the parser's check.
    if (size > maxBytes) throw new RangeError(`file is ${size} bytes, over the ${maxBytes}-byte limit`);
    const buffer = Buffer.alloc(Math.min(size, maxBytes) + 1);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return buffer.subarray(0, bytesRead).toString("utf8");
  } finally {
    await handle.close();
  }
}

/**
 * Reads every manifest of `dir` within `limits`. A file whose text did not change since the last
 * reload is not parsed again (`cache`), so a hostile file costs its parse once, not on every edit.
 */
async function readManifestDir(
  dir: string,
  limits: Required<ManifestLimits>,
  cache: Map<string, { text: string; parsed: ParsedManifestFile }>,
): Promise<ParsedManifestFile[]> {
  const names = (await readdir(dir)).filter((n) => MANIFEST_EXTENSIONS.has(extname(n)) && !n.startsWith("."));
  const files: ParsedManifestFile[] = [];
  const present = new Set<string>();
  for (const name of names.sort()) {
    let text: string;
    try {
      text = await readManifestText(join(dir, name), limits.maxFileBytes);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A file removed between listing and reading is simply not there any more.
      if (code === "ENOENT") continue;
      present.add(name);
      cache.delete(name);
      files.push(unreadableManifestFile(name, err instanceof Error ? err.message : String(err)));
      continue;
    }
    present.add(name);
    const cached = cache.get(name);
    if (cached !== undefined && cached.text === text) {
      files.push(cached.parsed);
      continue;
    }
    // Each parse is bounded by the limits; between files the event loop serves xDS and the CA.
    await new Promise<void>((resolveTurn) => setImmediate(resolveTurn));
    const parsed = parseManifestFile({ path: name, text }, limits);
    cache.set(name, { text, parsed });
    files.push(parsed);
  }
  for (const name of cache.keys()) if (!present.has(name)) cache.delete(name);
  return files;
}

/** Checks the limits before anything is read: a bad value is a configuration error at start. */
export function resolveManifestLimits(limits: ManifestLimits | undefined): Required<ManifestLimits> {
  const resolved: Required<ManifestLimits> = { ...DEFAULT_MANIFEST_LIMITS, ...limits };
  for (const [name, value] of Object.entries(resolved)) {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new ControlPlaneError(
        "ERR_CONTROL_PLANE_CONFIG",
        `manifestLimits.${name} must be a non-negative integer`,
      );
    }
  }
  return resolved;
}

/** A {@link ConfigSource} over one directory of manifests, with last-good-state semantics per file. */
export function createFolderSource(options: FolderSourceOptions): ConfigSource {
  const { dir } = options;
  if (typeof dir !== "string" || dir === "") {
    throw new ControlPlaneError("ERR_CONTROL_PLANE_CONFIG", "meshDir is required");
  }
  const limits = resolveManifestLimits(options.limits);
  const logger = options.logger ?? noopLogger;
  // Manifest file -> the objects served from it: what a broken edit of that file falls back to.
  let lastGood = new Map<string, KubeObject[]>();
  // The objects served, by id, when each id is defined once.
  let acceptedById: Map<string, KubeObject> | undefined;
  const parseCache = new Map<string, { text: string; parsed: ParsedManifestFile }>();
  let watcher: FSWatcher | undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const allocator =
    options.allocateServiceEntryAddresses === false ? undefined : new ServiceEntryAddressAllocator();

  return {
    description: `folder ${dir}`,
    async snapshot(): Promise<ConfigSnapshot> {
      let files: ParsedManifestFile[];
      try {
        files = await readManifestDir(dir, limits, parseCache);
      } catch (cause) {
        throw new ControlPlaneError("ERR_CONTROL_PLANE_CONFIG", `cannot read mesh directory ${dir}`, {
          cause,
        });
      }
      const merged = applyLastGood(lastGood, files, validateManifestObject, failClosedStandIn);
      // Objects of a mesh kind from another API group are kept per file (their edits are followed)
      // but not served: a cluster's informers never list them.
      const objects = [...merged.files.keys()]
        .sort()
        .flatMap((file) => merged.files.get(file) ?? [])
        .filter((object) => foreignGroupOf(object) === undefined);
      // The allocation writes into the objects, as the cluster's allocator writes their status: an
      // unchanged object already shows its addresses and is left as it is, so identity still tells
      // what changed.
      if (allocator !== undefined) {
        const entries = objects.filter((o) => o.kind === "ServiceEntry");
        for (const [entry, addresses] of allocator.assign(entries)) {
          const object = entry as KubeObject;
          object.status = { ...(object.status ?? {}), addresses };
        }
      }
      // The change set against the accepted objects: an unchanged file keeps its parsed objects, so
      // identity tells what changed. Not given when two files define one object.
      const byId = new Map<string, KubeObject>();
      for (const object of objects) byId.set(objectId(object), object);
      const unique = byId.size === objects.length;
      let changes: ObjectChange[] | undefined;
      if (unique && acceptedById !== undefined) {
        changes = [];
        for (const [id, after] of byId) {
          const before = acceptedById.get(id);
          if (before !== after) changes.push({ id, kind: after.kind, before, after });
        }
        for (const [id, before] of acceptedById) {
          if (!byId.has(id)) changes.push({ id, kind: before.kind, before, after: undefined });
        }
      }
      return {
        objects,
        ...(changes === undefined ? {} : { changes }),
        errors: merged.errors,
        accept: () => {
          lastGood = merged.files;
          acceptedById = unique ? byId : undefined;
        },
      };
    },
    start(onChange) {
      if (options.watch === false || closed || watcher !== undefined) return;
      const debounce = options.debounceMs ?? 100;
      const maxWait = options.maxDebounceMs ?? DEFAULT_MAX_DEBOUNCE_MS;
      // When the first event of the change being gathered came (performance.now()).
      let firstEventAt = 0;
      watcher = watch(dir, () => {
        const now = performance.now();
        if (timer === undefined) firstEventAt = now;
        clearTimeout(timer);
        timer = setTimeout(
          () => {
            timer = undefined;
            if (!closed) onChange();
          },
          Math.min(debounce, Math.max(0, firstEventAt + maxWait - now)),
        );
      });
      watcher.on("error", (err) => logger.error({ err }, "mesh directory watch failed"));
    },
    async close() {
      closed = true;
      watcher?.close();
      clearTimeout(timer);
    },
  };
}
