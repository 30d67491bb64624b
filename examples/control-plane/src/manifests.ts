import { Composer, type Document, Lexer, LineCounter, Parser } from "yaml";

/** A Kubernetes object as read from a manifest (only the fields the control plane looks at are typed). */
export interface KubeObject {
  apiVersion?: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    creationTimestamp?: string;
    /** Set once the object is being deleted (a pod in its grace period). */
    deletionTimestamp?: string;
    /** The prefix its name was generated from (a controller's pods). */
    generateName?: string;
    /** Its owners; the one with `controller: true` made it (a pod's ReplicaSet, Job, ...). */
    ownerReferences?: { kind?: string; name?: string; controller?: boolean }[];
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  /** An EndpointSlice's fields, which the API has at the top level instead of in a spec. */
  addressType?: unknown;
  endpoints?: unknown;
  ports?: unknown;
  /** Where it came from: `file#document`. */
  source: string;
}

/** A problem found in the manifests; the object it concerns is skipped, the rest is served. */
export interface MeshIssue {
  /** `file#document`, or `Kind/namespace/name`. */
  source: string;
  message: string;
}

/** One manifest file's text. */
export interface ManifestFile {
  path: string;
  text: string;
}

/** A plain object (not null, not an array): what a manifest field that holds fields must be. */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function stringMap(value: unknown): Record<string, string> | undefined {
  if (!isRecord(value)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v === "string") out[k] = v;
    else if (typeof v === "number" || typeof v === "boolean") out[k] = String(v);
  }
  return out;
}

/** Bounds on what one manifest file may cost to read; a file over them is refused as a whole. */
export interface ManifestLimits {
  /**
   * Largest file read, in bytes. Default 3 MiB, the Kubernetes API server's request size limit
   * (`--max-request-bytes` of etcd is 1.5 MiB per object).
   */
  maxFileBytes?: number;
  /** Most YAML documents in one file. Default 1000. */
  maxDocuments?: number;
  /**
   * Most alias (`*name`) expansions per document, the guard against "billion laughs" files. Default 100;
   * the `yaml` package's `maxAliasCount`.
   */
  maxAliasCount?: number;
  /**
   * Deepest nesting of flow collections (`[...]`, `{...}`, so also JSON), checked while lexing: the
   * parser's cost grows faster than the depth. Default 64.
   */
  maxFlowDepth?: number;
  /**
   * Most YAML tokens (scalars, indicators, line breaks) in one file, checked while lexing. Parsing
   * costs a few microseconds per token and blocks the event loop, so this bounds what one file can cost
   * to well under a second. Default 50 000 (some 10 000 lines of ordinary manifests).
   */
  maxTokens?: number;
}

/** {@link ManifestLimits} with every default filled in. */
export const DEFAULT_MANIFEST_LIMITS: Readonly<Required<ManifestLimits>> = {
  maxFileBytes: 3 * 1024 * 1024,
  maxDocuments: 1000,
  maxAliasCount: 100,
  maxFlowDepth: 64,
  maxTokens: 50_000,
};

/** What one manifest file holds, as far as it could be read. */
export interface ParsedManifestFile {
  path: string;
  /** Every object read, with its kind and name (whether valid or not is decided later). */
  objects: KubeObject[];
  /**
   * Parts of the file that could not be read into a named object (bad YAML, a document without kind
   * or name, a limit exceeded). When there is any, an object missing from `objects` may be
   * unreadable rather than deleted.
   */
  problems: MeshIssue[];
  /** The file has no content at all (0 bytes or only whitespace), as while an editor rewrites it. */
  empty: boolean;
}

/** A file refused before its text is read (too large, unreadable): it counts as unreadable as a whole. */
export function unreadableManifestFile(path: string, message: string): ParsedManifestFile {
  return { path, objects: [], problems: [{ source: path, message }], empty: false };
}

function limitsOf(limits: ManifestLimits): Required<ManifestLimits> {
  return { ...DEFAULT_MANIFEST_LIMITS, ...limits };
}

function firstError(doc: Document.Parsed, lines: LineCounter): string | undefined {
  const first = doc.errors[0];
  if (first === undefined) return undefined;
  const at = lines.linePos(first.pos[0]);
  const where = at.line > 0 ? ` (line ${at.line}, column ${at.col})` : "";
  return `malformed YAML${where}: ${first.message.split("\n")[0]}`;
}

/**
 * Reads one multi-document YAML (or JSON) manifest file into objects with a kind and a name, within
 * `limits`. Never throws: documents that are not YAML, not objects, or lack `kind` / `metadata.name`
 * become `problems`; `kind: List` is unpacked.
 */
export function parseManifestFile(file: ManifestFile, limits: ManifestLimits = {}): ParsedManifestFile {
  const { maxFileBytes, maxDocuments, maxAliasCount, maxFlowDepth, maxTokens } = limitsOf(limits);
  const out: ParsedManifestFile = { path: file.path, objects: [], problems: [], empty: false };
  const bytes = Buffer.byteLength(file.text, "utf8");
  if (bytes > maxFileBytes) {
    return unreadableManifestFile(file.path, `file is ${bytes} bytes, over the ${maxFileBytes}-byte limit`);
  }
  if (file.text.trim() === "") return { ...out, empty: true };
  const docs: Document.Parsed[] = [];
  const lines = new LineCounter();
  try {
    // Lexed, parsed and composed one token at a time, so endless `---`, `[[[[` or `- x` stop at a limit.
    const composer = new Composer({ uniqueKeys: true });
    const take = (doc: Document.Parsed): void => {
      docs.push(doc);
      if (docs.length > maxDocuments) throw new Error(`more than ${maxDocuments} YAML documents`);
    };
    const parser = new Parser(lines.addNewLine);
    lines.addNewLine(0); // Parser.parse() records the first line's start itself; next() does not.
    let depth = 0;
    let tokens = 0;
    for (const lexeme of new Lexer().lex(file.text)) {
      if (++tokens > maxTokens) throw new Error(`more than ${maxTokens} YAML tokens`);
      if (lexeme === "[" || lexeme === "{") {
        if (++depth > maxFlowDepth) throw new Error(`collections nested deeper than ${maxFlowDepth}`);
      } else if ((lexeme === "]" || lexeme === "}") && depth > 0) depth--;
      for (const token of parser.next(lexeme)) for (const doc of composer.next(token)) take(doc);
    }
    for (const token of parser.end()) for (const doc of composer.next(token)) take(doc);
    for (const doc of composer.end()) take(doc);
  } catch (err) {
    return unreadableManifestFile(file.path, `not read: ${err instanceof Error ? err.message : String(err)}`);
  }
  docs.forEach((doc, index) => {
    const source = `${file.path}#${index}`;
    const error = firstError(doc, lines);
    if (error !== undefined) {
      out.problems.push({ source, message: error });
      return;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount });
    } catch (err) {
      // The yaml package's alias guard, or a document too deeply nested to convert.
      out.problems.push({ source, message: `not read: ${err instanceof Error ? err.message : String(err)}` });
      return;
    }
    if (value === null || value === undefined) return;
    const items =
      isRecord(value) && value.kind === "List" && Array.isArray(value.items) ? value.items : [value];
    for (const item of items) {
      const obj = toObject(item, source);
      if (typeof obj === "string") out.problems.push({ source, message: obj });
      else out.objects.push(obj);
    }
  });
  return out;
}

/**
 * Reads multi-document YAML manifests into objects with a kind and a name (see
 * {@link parseManifestFile}). Files are read in path order so the result does not depend on
 * directory listing order.
 */
export function parseManifests(
  files: readonly ManifestFile[],
  limits: ManifestLimits = {},
): {
  objects: KubeObject[];
  issues: MeshIssue[];
} {
  const objects: KubeObject[] = [];
  const issues: MeshIssue[] = [];
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const file of sorted) {
    const parsed = parseManifestFile(file, limits);
    objects.push(...parsed.objects);
    issues.push(...parsed.problems);
  }
  return { objects, issues };
}

/**
 * API groups whose kinds are all known, with those kinds. A document of such a group with another
 * kind is a misspelling the API server would refuse ("no matches for kind"). Read as an object of an
 * unknown kind, it would be ignored without a word, and the policy it was meant to be (or to replace,
 * which then counts as deleted) silently missing; as a part of the file that cannot be read, it is
 * reported and the file's last good objects stay.
 */
const KINDS_OF_GROUP: ReadonlyMap<string, ReadonlySet<string>> = new Map([
  ["security.istio.io", new Set(["AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication"])],
]);

/**
 * The API group the mesh reads each of its kinds from: the Kubernetes source's resources, and the
 * folder's Deployment (pods by annotation). An object of one of these kinds from another group (a
 * `networking.istio.io` Gateway, a Knative `serving.knative.dev` Service) is another resource, which
 * a cluster's informers never list: the folder does not serve it either.
 */
export const MESH_KIND_GROUPS: ReadonlyMap<string, string> = new Map([
  ["Namespace", ""],
  ["Node", ""],
  ["Service", ""],
  ["Pod", ""],
  ["Deployment", "apps"],
  ["EndpointSlice", "discovery.k8s.io"],
  ["AuthorizationPolicy", "security.istio.io"],
  ["PeerAuthentication", "security.istio.io"],
  ["RequestAuthentication", "security.istio.io"],
  ["GatewayClass", "gateway.networking.k8s.io"],
  ["Gateway", "gateway.networking.k8s.io"],
  ["HTTPRoute", "gateway.networking.k8s.io"],
  ["GRPCRoute", "gateway.networking.k8s.io"],
  ["ReferenceGrant", "gateway.networking.k8s.io"],
  ["ServiceEntry", "networking.istio.io"],
  ["WorkloadEntry", "networking.istio.io"],
]);

/** The API group of `apiVersion` (`""` for the core group's `v1`), or undefined without one. */
export function apiGroupOf(object: Pick<KubeObject, "apiVersion">): string | undefined {
  const { apiVersion } = object;
  if (apiVersion === undefined) return undefined;
  const slash = apiVersion.indexOf("/");
  return slash < 0 ? "" : apiVersion.slice(0, slash);
}

/**
 * The group of an object whose kind the mesh reads from another group ({@link MESH_KIND_GROUPS}),
 * else undefined (a mesh object, an object without `apiVersion`, or a kind the mesh does not read).
 */
export function foreignGroupOf(object: Pick<KubeObject, "kind" | "apiVersion">): string | undefined {
  const expected = MESH_KIND_GROUPS.get(object.kind);
  const group = apiGroupOf(object);
  return expected === undefined || group === undefined || group === expected ? undefined : group;
}

function toObject(value: unknown, source: string): KubeObject | string {
  if (!isRecord(value)) return "a manifest document must be an object";
  const { kind, metadata } = value;
  if (typeof kind !== "string" || kind === "") return "kind is missing";
  if (typeof value.apiVersion === "string") {
    const slash = value.apiVersion.indexOf("/");
    const group = slash < 0 ? "" : value.apiVersion.slice(0, slash);
    const kinds = KINDS_OF_GROUP.get(group);
    if (kinds !== undefined && !kinds.has(kind)) {
      return `${group} has no kind ${JSON.stringify(kind)} (it has ${[...kinds].join(", ")})`;
    }
    // A policy kind of another group is not served (see MESH_KIND_GROUPS); ignoring it without a
    // word would let a misspelt group drop a policy, so it is a part of the file that cannot be read.
    for (const [policyGroup, policyKinds] of KINDS_OF_GROUP) {
      if (policyKinds.has(kind) && group !== policyGroup) {
        return `${kind} is read from ${policyGroup}, not ${group === "" ? "the core group" : group}`;
      }
    }
  }
  if (!isRecord(metadata) || typeof metadata.name !== "string" || metadata.name === "") {
    return `${kind}: metadata.name is missing`;
  }
  const meta: KubeObject["metadata"] = { name: metadata.name };
  if (typeof metadata.namespace === "string" && metadata.namespace !== "")
    meta.namespace = metadata.namespace;
  if (typeof metadata.uid === "string" && metadata.uid !== "") meta.uid = metadata.uid;
  const labels = stringMap(metadata.labels);
  if (labels) meta.labels = labels;
  const annotations = stringMap(metadata.annotations);
  if (annotations) meta.annotations = annotations;
  if (typeof metadata.creationTimestamp === "string") meta.creationTimestamp = metadata.creationTimestamp;
  if (typeof metadata.deletionTimestamp === "string") meta.deletionTimestamp = metadata.deletionTimestamp;
  if (typeof metadata.generateName === "string") meta.generateName = metadata.generateName;
  if (Array.isArray(metadata.ownerReferences)) {
    meta.ownerReferences = metadata.ownerReferences as NonNullable<KubeObject["metadata"]["ownerReferences"]>;
  }
  const obj: KubeObject = { kind, metadata: meta, source };
  if (typeof value.apiVersion === "string") obj.apiVersion = value.apiVersion;
  if (isRecord(value.spec)) obj.spec = value.spec;
  if (isRecord(value.status)) obj.status = value.status;
  if (kind === "EndpointSlice") keepSliceFields(value, obj);
  return obj;
}

/** Copies an EndpointSlice's top-level fields (`addressType`, `endpoints`, `ports`) that are present. */
export function keepSliceFields(from: Record<string, unknown>, to: KubeObject): void {
  if (from.addressType !== undefined) to.addressType = from.addressType;
  if (from.endpoints !== undefined) to.endpoints = from.endpoints;
  if (from.ports !== undefined) to.ports = from.ports;
}
