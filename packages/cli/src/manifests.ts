// Reads a folder of Kubernetes manifests (the shape of the repository's mesh/ folder) into objects that
// remember where they came from, so every finding and every error can name a file and a line.
import { readdir, readFile, stat } from "node:fs/promises";
import { extname, join } from "node:path";
import { type Document, isNode, LineCounter, parseAllDocuments } from "yaml";
import { CliError } from "./errors.js";

/** A Kubernetes object read from a manifest file (only the fields the commands look at are typed). */
export interface ManifestObject {
  apiVersion?: string;
  kind: string;
  metadata: {
    name: string;
    namespace: string;
    labels: Record<string, string>;
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  /** The object as parsed, for validation. */
  raw: Record<string, unknown>;
  /** File name inside the folder. */
  file: string;
  /** 1-based line where the object's document starts. */
  line: number;
  /**
   * 1-based line of a field path such as `spec.rules[0].from[0].source.ipBlocks[1]` or
   * `metadata.labels["istio.io/use-waypoint"]`; the line of its nearest present parent when the field
   * is absent.
   */
  locate(path: string): number;
}

/** A part of a file that could not be read into an object. */
export interface ManifestProblem {
  file: string;
  line: number;
  /** `document N` (0-based) for problems inside a YAML stream. */
  object: string;
  message: string;
}

/** Everything read from a folder. */
export interface ManifestSet {
  dir: string;
  /** File names read, sorted. */
  files: string[];
  objects: ManifestObject[];
  problems: ManifestProblem[];
}

const MANIFEST_EXTENSIONS = new Set([".yaml", ".yml", ".json"]);
/** The Kubernetes API server's request limit; a larger file is refused, not parsed. */
const MAX_FILE_BYTES = 3 * 1024 * 1024;
/** Guard against alias ("billion laughs") expansion. */
const MAX_ALIAS_COUNT = 100;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function stringMap(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!isRecord(value)) return out;
  for (const [k, v] of Object.entries(value)) if (typeof v === "string") out[k] = v;
  return out;
}

/** `a.b[0]["c.d"]` as keys `a`, `b`, 0, `c.d`. */
function pathKeys(path: string): (string | number)[] {
  const keys: (string | number)[] = [];
  for (const m of path.matchAll(/\["([^"]*)"\]|\[(\d+)\]|([^.[\]]+)/g)) {
    if (m[1] !== undefined) keys.push(m[1]);
    else if (m[2] !== undefined) keys.push(Number(m[2]));
    else if (m[3] !== undefined) keys.push(m[3]);
  }
  return keys;
}

function locator(doc: Document.Parsed, lines: LineCounter, prefix: (string | number)[], fallback: number) {
  return (path: string): number => {
    const keys = [...prefix, ...pathKeys(path)];
    for (let n = keys.length; n >= prefix.length; n--) {
      const node = doc.getIn(keys.slice(0, n), true);
      if (isNode(node) && node.range) return lines.linePos(node.range[0]).line;
    }
    return fallback;
  };
}

/**
 * Reads one manifest file's text: every document that is an object with a `kind` and a
 * `metadata.name` becomes an object (a `kind: List` is unpacked), the rest become problems.
 */
export function parseManifestText(file: string, text: string): Pick<ManifestSet, "objects" | "problems"> {
  const objects: ManifestObject[] = [];
  const problems: ManifestProblem[] = [];
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines });
  const list = Array.isArray(docs) ? docs : [];
  list.forEach((doc, index) => {
    const line = lines.linePos(doc.range[0]).line;
    const object = `document ${index}`;
    const firstError = doc.errors[0];
    if (firstError !== undefined) {
      const at = lines.linePos(firstError.pos[0]);
      problems.push({
        file,
        line: at.line,
        object,
        message: `malformed YAML (line ${at.line}, column ${at.col}): ${firstError.message.split("\n")[0]}`,
      });
      return;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
    } catch (err) {
      problems.push({ file, line, object, message: err instanceof Error ? err.message : String(err) });
      return;
    }
    if (value === null || value === undefined) return;
    const isList = isRecord(value) && value.kind === "List";
    const items = isList && isRecord(value) ? value.items : [value];
    if (!Array.isArray(items)) {
      problems.push({ file, line, object, message: "a List needs an items array" });
      return;
    }
    items.forEach((item, i) => {
      const where = items.length > 1 || item !== value ? `${object}, items[${i}]` : object;
      if (!isRecord(item)) {
        problems.push({ file, line, object: where, message: "not an object" });
        return;
      }
      const metadata = isRecord(item.metadata) ? item.metadata : {};
      if (typeof item.kind !== "string" || item.kind === "") {
        problems.push({ file, line, object: where, message: "kind: missing (every object needs a kind)" });
        return;
      }
      if (typeof metadata.name !== "string" || metadata.name === "") {
        problems.push({ file, line, object: `${item.kind} (${where})`, message: "metadata.name: missing" });
        return;
      }
      const out: ManifestObject = {
        kind: item.kind,
        metadata: {
          name: metadata.name,
          namespace:
            typeof metadata.namespace === "string" && metadata.namespace !== ""
              ? metadata.namespace
              : "default",
          labels: stringMap(metadata.labels),
        },
        raw: item,
        file,
        line,
        locate: locator(doc, lines, isList ? ["items", i] : [], line),
      };
      if (typeof item.apiVersion === "string") out.apiVersion = item.apiVersion;
      if (isRecord(item.spec)) out.spec = item.spec;
      if (isRecord(item.status)) out.status = item.status;
      objects.push(out);
    });
  });
  return { objects, problems };
}

/**
 * Reads every `.yaml`, `.yml` and `.json` file directly inside `dir` (not hidden, sorted by name).
 * Throws {@link CliError} `ERR_MANIFESTS_UNREADABLE` when the folder itself cannot be read; a bad file
 * becomes a problem and the others are still read.
 */
export async function loadManifests(dir: string): Promise<ManifestSet> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code ?? "error";
    throw new CliError(
      "ERR_MANIFESTS_UNREADABLE",
      `cannot read the manifests folder ${dir} (${code}): pass an existing folder of YAML manifests`,
      { cause },
    );
  }
  const files = names.filter((n) => MANIFEST_EXTENSIONS.has(extname(n)) && !n.startsWith(".")).sort();
  const set: ManifestSet = { dir, files, objects: [], problems: [] };
  for (const file of files) {
    const path = join(dir, file);
    try {
      const info = await stat(path);
      if (!info.isFile()) continue;
      if (info.size > MAX_FILE_BYTES) {
        set.problems.push({
          file,
          line: 0,
          object: "file",
          message: `${info.size} bytes, over the ${MAX_FILE_BYTES}-byte limit`,
        });
        continue;
      }
      const parsed = parseManifestText(file, await readFile(path, "utf8"));
      set.objects.push(...parsed.objects);
      set.problems.push(...parsed.problems);
    } catch (err) {
      set.problems.push({
        file,
        line: 0,
        object: "file",
        message: err instanceof Error ? err.message : String(err),
      });
    }
  }
  return set;
}

/** `Kind namespace/name`. */
export function objectName(object: ManifestObject): string {
  return `${object.kind} ${object.metadata.namespace}/${object.metadata.name}`;
}

/** Label key a Service or namespace uses to name its waypoint. */
export const USE_WAYPOINT_LABEL = "istio.io/use-waypoint";
/** Label key that puts a namespace or pod in (or, with `none`, out of) the ambient mesh. */
export const DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode";
/** Label a waypoint's pods carry with their Gateway's name. */
export const GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name";

/** Pods whose labels include every pair of `selector` (an empty selector matches none, as for a Service). */
export function podsSelectedBy(
  set: Pick<ManifestSet, "objects">,
  namespace: string | undefined,
  selector: Readonly<Record<string, string>>,
): ManifestObject[] {
  const pairs = Object.entries(selector);
  if (pairs.length === 0) return [];
  return set.objects.filter(
    (o) =>
      o.kind === "Pod" &&
      (namespace === undefined || o.metadata.namespace === namespace) &&
      pairs.every(([k, v]) => o.metadata.labels[k] === v),
  );
}

/** The pod's IP from `status.podIP`, if any. */
export function podIp(pod: ManifestObject): string | undefined {
  const ip = pod.status?.podIP;
  return typeof ip === "string" && ip !== "" ? ip : undefined;
}

/** The pod's service account (`default` when unset, as in Kubernetes). */
export function podServiceAccount(pod: ManifestObject): string {
  const sa = pod.spec?.serviceAccountName;
  return typeof sa === "string" && sa !== "" ? sa : "default";
}

export { isRecord, stringMap };
