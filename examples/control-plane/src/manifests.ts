import { parseAllDocuments } from "yaml";

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
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
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

function isRecord(value: unknown): value is Record<string, unknown> {
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

/**
 * Reads multi-document YAML manifests into objects with a kind and a name. Documents that are not
 * YAML, not objects, or lack `kind` / `metadata.name` become issues; `kind: List` is unpacked.
 * Files are read in path order so the result does not depend on directory listing order.
 */
export function parseManifests(files: readonly ManifestFile[]): {
  objects: KubeObject[];
  issues: MeshIssue[];
} {
  const objects: KubeObject[] = [];
  const issues: MeshIssue[] = [];
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const file of sorted) {
    const docs = parseAllDocuments(file.text);
    const list = Array.isArray(docs) ? docs : [];
    list.forEach((doc, index) => {
      const source = `${file.path}#${index}`;
      const first = doc.errors[0];
      if (first !== undefined) {
        issues.push({ source, message: `malformed YAML: ${first.message}` });
        return;
      }
      const value: unknown = doc.toJS();
      if (value === null || value === undefined) return;
      const items =
        isRecord(value) && value.kind === "List" && Array.isArray(value.items) ? value.items : [value];
      for (const item of items) {
        const obj = toObject(item, source);
        if (typeof obj === "string") issues.push({ source, message: obj });
        else objects.push(obj);
      }
    });
  }
  return { objects, issues };
}

function toObject(value: unknown, source: string): KubeObject | string {
  if (!isRecord(value)) return "a manifest document must be an object";
  const { kind, metadata } = value;
  if (typeof kind !== "string" || kind === "") return "kind is missing";
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
  const obj: KubeObject = { kind, metadata: meta, source };
  if (typeof value.apiVersion === "string") obj.apiVersion = value.apiVersion;
  if (isRecord(value.spec)) obj.spec = value.spec;
  if (isRecord(value.status)) obj.status = value.status;
  return obj;
}
