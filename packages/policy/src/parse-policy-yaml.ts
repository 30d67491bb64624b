import { parseAllDocuments } from "yaml";
import { PolicyError, type ValidationIssue } from "./errors.js";
import type { AuthorizationPolicy, PeerAuthentication, PolicyResource } from "./kubernetes-types.js";
import { type ValidateOptions, validateResource } from "./validate-resource.js";

/** A warning about one resource of a YAML stream. */
export interface ResourceWarning extends ValidationIssue {
  /** `Kind namespace/name`. */
  readonly resource: string;
}

/** Everything read from a YAML stream: bad documents are reported and skipped, the rest kept. */
export interface ParsedPolicies {
  authorizationPolicies: AuthorizationPolicy[];
  peerAuthentications: PeerAuthentication[];
  /** One error per rejected document; `details.document` is its 0-based index in the stream. */
  errors: PolicyError[];
  warnings: ResourceWarning[];
}

function resourceName(r: PolicyResource): string {
  return `${r.kind} ${r.metadata.namespace}/${r.metadata.name}`;
}

/**
 * Reads a multi-document YAML (or JSON) stream of AuthorizationPolicy and PeerAuthentication
 * resources (a `kind: List` is unpacked). Never throws for bad content: every document that is
 * malformed or invalid becomes an entry of `errors`, and the valid ones are returned.
 */
export function parsePolicyYaml(text: string, options: ValidateOptions = {}): ParsedPolicies {
  const out: ParsedPolicies = {
    authorizationPolicies: [],
    peerAuthentications: [],
    errors: [],
    warnings: [],
  };
  let docs: ReturnType<typeof parseAllDocuments>;
  try {
    docs = parseAllDocuments(text);
  } catch (cause) {
    out.errors.push(
      new PolicyError("ERR_POLICY_YAML", `malformed YAML: ${String(cause)}`, { cause, document: 0 }),
    );
    return out;
  }
  const list = Array.isArray(docs) ? docs : [];
  list.forEach((doc, index) => {
    if (doc.errors.length > 0) {
      const first = doc.errors[0];
      const where = first?.linePos?.[0]
        ? ` at line ${first.linePos[0].line}, column ${first.linePos[0].col}`
        : "";
      out.errors.push(
        new PolicyError(
          "ERR_POLICY_YAML",
          `malformed YAML in document ${index}${where}: ${first?.message ?? "unknown error"}`,
          {
            cause: first,
            document: index,
          },
        ),
      );
      return;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (cause) {
      out.errors.push(
        new PolicyError("ERR_POLICY_YAML", `document ${index}: ${String(cause)}`, { cause, document: index }),
      );
      return;
    }
    if (value === null || value === undefined) return;
    const items =
      typeof value === "object" && !Array.isArray(value) && (value as Record<string, unknown>).kind === "List"
        ? (value as Record<string, unknown>).items
        : [value];
    if (!Array.isArray(items)) {
      out.errors.push(
        new PolicyError("ERR_POLICY_INVALID", `document ${index}: List.items must be a list`, {
          document: index,
        }),
      );
      return;
    }
    for (const item of items) {
      try {
        const { resource, warnings } = validateResource(item, options);
        if (resource.kind === "AuthorizationPolicy") out.authorizationPolicies.push(resource);
        else out.peerAuthentications.push(resource);
        for (const w of warnings) out.warnings.push({ ...w, resource: resourceName(resource) });
      } catch (err) {
        if (err instanceof PolicyError) {
          out.errors.push(
            new PolicyError(err.code, `document ${index}: ${err.message}`, {
              cause: err,
              issues: err.issues,
              document: index,
            }),
          );
        } else throw err;
      }
    }
  });
  return out;
}
