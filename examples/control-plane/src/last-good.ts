// Last good state wins: an edit that cannot be read or validated never removes what was served from
// that file (above all a policy, whose removal opens the mesh). A pure function of the previous objects
// per file and the new parse, so every case is a row in a table test.
import { foreignGroupOf, type KubeObject, type ParsedManifestFile } from "./manifests.js";

/** A manifest problem that kept an edit from being applied. */
export interface ManifestError {
  /** The manifest file, relative to the mesh directory. */
  file: string;
  /** `Kind/namespace/name` when the problem is one object; absent when it is the file or a document. */
  object?: string;
  /** 0-based YAML document index, when known. */
  document?: number;
  message: string;
  /** What is served instead: the named objects' last good versions (`Kind/namespace/name`), maybe none. */
  keeping: string[];
}

/** What to serve after one reload. */
export interface LastGoodResult {
  /** Manifest file -> the objects served from it (the new valid ones plus any kept last good ones). */
  files: Map<string, KubeObject[]>;
  errors: ManifestError[];
}

/** Returns why an object read from a manifest cannot be served, or undefined when it can. */
export type ObjectValidator = (object: KubeObject) => string | undefined;

/**
 * What to serve in place of an object that fails validation and has no last good version, or
 * undefined to serve nothing (see `failClosedStandIn`).
 */
export type StandIn = (object: KubeObject) => KubeObject | undefined;

/**
 * `Kind/namespace/name`, the identity an object keeps across edits; `Kind.group/namespace/name` for a
 * kind the mesh reads from another API group (`Gateway.networking.istio.io/...`), which is another
 * object than the mesh's own of the same name.
 */
export function objectId(object: KubeObject): string {
  const foreign = foreignGroupOf(object);
  const kind = foreign === undefined ? object.kind : `${object.kind}.${foreign}`;
  const id = `${kind}/${object.metadata.namespace ?? "default"}/${object.metadata.name}`;
  // The Kubernetes source names a namespaced object by this same text: hand back its string, so the
  // maps keyed by id (last good state, change-set index) hold no copy per object.
  return object.source === id ? object.source : id;
}

/** Annotation on a stand-in policy, saying why it stands in (see `failClosedStandIn`). */
export const STAND_IN_ANNOTATION = "ambient.istio.io/stand-in";

/** True for a stand-in: what was served in place of an object that never validated. */
export function isStandIn(object: KubeObject): boolean {
  return object.metadata.annotations?.[STAND_IN_ANNOTATION] !== undefined;
}

/** The error's words for a policy served as its stand-in. */
export function standInMessage(object: KubeObject): string {
  return object.kind === "PeerAuthentication"
    ? "serving a STRICT stand-in over the workloads it covers until it validates"
    : "serving a stand-in that denies every request it covers until it validates";
}

function documentOf(source: string): number | undefined {
  const hash = source.lastIndexOf("#");
  if (hash < 0) return undefined;
  const n = Number(source.slice(hash + 1));
  return Number.isInteger(n) ? n : undefined;
}

/**
 * Decides what each manifest file serves after an edit:
 * - an object that reads and validates is served as written;
 * - an object that reads but fails validation keeps its last good version, with an error; if it never
 *   had one, `standIn` decides what is served in its place (a policy's fail-closed stand-in), else
 *   nothing;
 * - when part of the file cannot be read (bad YAML, a document without kind or name, a limit), or the
 *   file is empty (0 bytes, as while an editor truncates then writes), every last good object of the file
 *   that is not in the new reading is kept, with an error;
 * - when the whole file reads, an object no longer in it is deleted;
 * - a file no longer in `current` is deleted with its objects.
 */
export function applyLastGood(
  previous: ReadonlyMap<string, readonly KubeObject[]>,
  current: readonly ParsedManifestFile[],
  validate: ObjectValidator,
  standIn: StandIn = () => undefined,
): LastGoodResult {
  const files = new Map<string, KubeObject[]>();
  const errors: ManifestError[] = [];
  for (const parsed of current) {
    const before = previous.get(parsed.path) ?? [];
    const beforeById = new Map(before.map((o) => [objectId(o), o] as const));
    const served: KubeObject[] = [];
    const seen = new Set<string>();
    for (const object of parsed.objects) {
      const id = objectId(object);
      const document = documentOf(object.source);
      const at = document === undefined ? {} : { document };
      if (seen.has(id)) {
        errors.push({
          file: parsed.path,
          object: id,
          ...at,
          message: "defined more than once in this file: the first definition is used",
          keeping: [],
        });
        continue;
      }
      seen.add(id);
      const problem = validate(object);
      if (problem === undefined) {
        served.push(object);
        continue;
      }
      // A stand-in served before is no good version: the stand-in is made again from this reading.
      const prior = beforeById.get(id);
      const last = prior !== undefined && !isStandIn(prior) ? prior : undefined;
      const kept = last ?? standIn(object);
      if (kept !== undefined) served.push(kept);
      errors.push({
        file: parsed.path,
        object: id,
        ...at,
        message: `${problem}: ${last !== undefined ? "serving its last good version" : kept !== undefined ? standInMessage(object) : "not served"}`,
        keeping: last === undefined ? [] : [id],
      });
    }
    if (parsed.empty || parsed.problems.length > 0) {
      // Unreadable parts may hold any of the missing objects: none of them counts as deleted.
      const kept = before.filter((o) => !seen.has(objectId(o)));
      served.push(...kept);
      const keeping = kept.map(objectId);
      const suffix =
        keeping.length === 0 ? "" : `: serving the last good ${keeping.length === 1 ? "object" : "objects"}`;
      if (parsed.empty) {
        if (keeping.length > 0) {
          errors.push({
            file: parsed.path,
            message: `file is empty${suffix} (delete the file to remove them)`,
            keeping,
          });
        }
      } else {
        parsed.problems.forEach((problem, i) => {
          const document = documentOf(problem.source);
          errors.push({
            file: parsed.path,
            ...(document === undefined ? {} : { document }),
            message: `${problem.message}${i === 0 ? suffix : ""}`,
            keeping: i === 0 ? keeping : [],
          });
        });
      }
    }
    files.set(parsed.path, served);
  }
  return { files, errors };
}
