import { brandClass } from "./brand.js";
import { SpiffeError } from "./errors.js";

const SCHEME_PREFIX = "spiffe://";
/** SPIFFE ID spec: validators must support IDs up to 2048 bytes; we refuse longer ones. */
export const MAX_SPIFFE_ID_BYTES = 2048;
/** SPIFFE ID spec: trust domain names up to 255 bytes. */
export const MAX_TRUST_DOMAIN_BYTES = 255;

const TRUST_DOMAIN_CHAR = /^[a-z0-9._-]$/;
const PATH_SEGMENT_CHAR = /^[a-zA-Z0-9._-]$/;
// Whole-string forms of the rules above: valid IDs pass these in one test each; only an invalid
// one takes the character-by-character walk that names its problem.
const VALID_TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
const VALID_PATH = /^(?:\/[a-zA-Z0-9._-]+)*$/;
const DOT_SEGMENT = /\/\.\.?(?:\/|$)/;

/** The Istio identity carried in `spiffe://<td>/ns/<namespace>/sa/<serviceAccount>`. */
export interface IstioIdentity {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

function invalidId(text: string, reason: string): SpiffeError {
  return new SpiffeError(
    "ERR_SPIFFE_ID_INVALID",
    `invalid SPIFFE ID ${JSON.stringify(clip(text))}: ${reason}`,
    {
      reason,
    },
  );
}

function clip(text: string): string {
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}

function describeBadChar(ch: string, where: "trust domain" | "path"): string {
  switch (ch) {
    case ":":
      return where === "trust domain"
        ? "a port is not allowed in the trust domain"
        : "':' is not allowed in the path";
    case "@":
      return "userinfo is not allowed";
    case "?":
      return "a query is not allowed";
    case "#":
      return "a fragment is not allowed";
    case "%":
      return "percent-encoding is not allowed";
    default:
      if (where === "trust domain" && /[A-Z]/.test(ch)) {
        return "the trust domain must be lower-case";
      }
      return `character ${JSON.stringify(ch)} is not allowed in the ${where}`;
  }
}

/** Returns a reason string when `td` is not a valid trust domain name, else undefined. */
function trustDomainProblem(td: string): string | undefined {
  if (VALID_TRUST_DOMAIN.test(td)) return undefined;
  if (td.length === 0) return "the trust domain is empty";
  if (Buffer.byteLength(td) > MAX_TRUST_DOMAIN_BYTES) {
    return `the trust domain is longer than ${MAX_TRUST_DOMAIN_BYTES} bytes`;
  }
  for (const ch of td) {
    if (!TRUST_DOMAIN_CHAR.test(ch)) return describeBadChar(ch, "trust domain");
  }
  return undefined;
}

function pathProblem(path: string): string | undefined {
  if (VALID_PATH.test(path) && !DOT_SEGMENT.test(path)) return undefined;
  if (!path.startsWith("/")) return "the path must start with '/'";
  const segments = path.slice(1).split("/");
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i] as string;
    if (seg === "") {
      return i === segments.length - 1 ? "the path must not end with '/'" : "the path has an empty segment";
    }
    if (seg === "." || seg === "..") return `the path has a '${seg}' segment`;
    for (const ch of seg) {
      if (!PATH_SEGMENT_CHAR.test(ch)) return describeBadChar(ch, "path");
    }
  }
  return undefined;
}

/**
 * Checks a trust domain name (`[a-z0-9._-]`, 1 to 255 bytes) and returns it.
 * @throws SpiffeError `ERR_TRUST_DOMAIN_INVALID`
 */
export function parseTrustDomain(text: string): string {
  if (typeof text !== "string") {
    throw new SpiffeError("ERR_TRUST_DOMAIN_INVALID", "trust domain must be a string");
  }
  const problem = trustDomainProblem(text);
  if (problem !== undefined) {
    throw new SpiffeError(
      "ERR_TRUST_DOMAIN_INVALID",
      `invalid trust domain ${JSON.stringify(clip(text))}: ${problem}`,
      {
        reason: problem,
      },
    );
  }
  return text;
}

/**
 * A SPIFFE ID, `spiffe://<trust-domain><path>`, validated per the SPIFFE ID specification:
 * lower-case trust domain of `[a-z0-9._-]`, path segments of `[a-zA-Z0-9._-]`, no empty, `.` or `..`
 * segments, no trailing `/`, no port, userinfo, query, fragment or percent-encoding, at most 2048 bytes.
 */
export class SpiffeId {
  /** Trust domain name, e.g. `cluster.local`. */
  readonly trustDomain: string;
  /** Path, empty or starting with `/`, e.g. `/ns/default/sa/bookinfo`. */
  readonly path: string;

  private constructor(trustDomain: string, path: string) {
    this.trustDomain = trustDomain;
    this.path = path;
  }

  /**
   * Parses and validates a SPIFFE ID.
   * @throws SpiffeError `ERR_SPIFFE_ID_INVALID` with the reason.
   */
  static parse(text: string): SpiffeId {
    if (typeof text !== "string") throw invalidId(String(text), "not a string");
    if (text.length === 0) throw invalidId(text, "empty");
    if (Buffer.byteLength(text) > MAX_SPIFFE_ID_BYTES) {
      throw invalidId(text, `longer than ${MAX_SPIFFE_ID_BYTES} bytes`);
    }
    if (!text.startsWith(SCHEME_PREFIX)) {
      if (text.toLowerCase().startsWith(SCHEME_PREFIX))
        throw invalidId(text, "the scheme must be lower-case 'spiffe'");
      throw invalidId(text, "the scheme must be 'spiffe://'");
    }
    const rest = text.slice(SCHEME_PREFIX.length);
    const slash = rest.indexOf("/");
    const td = slash === -1 ? rest : rest.slice(0, slash);
    const path = slash === -1 ? "" : rest.slice(slash);
    const tdProblem = trustDomainProblem(td);
    if (tdProblem !== undefined) throw invalidId(text, tdProblem);
    const pProblem = pathProblem(path);
    if (pProblem !== undefined) throw invalidId(text, pProblem);
    return new SpiffeId(td, path);
  }

  /** Like {@link SpiffeId.parse} but returns `undefined` instead of throwing. */
  static tryParse(text: string): SpiffeId | undefined {
    try {
      return SpiffeId.parse(text);
    } catch {
      return undefined;
    }
  }

  /**
   * Builds a SPIFFE ID from a trust domain and path segments; each segment is validated.
   * @throws SpiffeError `ERR_SPIFFE_ID_INVALID`
   */
  static fromSegments(trustDomain: string, ...segments: string[]): SpiffeId {
    const joined = `${SCHEME_PREFIX}${String(trustDomain)}${segments.map((s) => `/${String(s)}`).join("")}`;
    if (typeof trustDomain !== "string") {
      throw invalidId(joined, `the trust domain must be a string, got ${typeof trustDomain}`);
    }
    const tdProblem = trustDomainProblem(trustDomain);
    if (tdProblem !== undefined) throw invalidId(joined, tdProblem);
    for (const seg of segments) {
      if (typeof seg !== "string" || seg.includes("/")) {
        throw invalidId(joined, `path segment ${JSON.stringify(seg)} must not contain '/'`);
      }
    }
    return SpiffeId.parse(`${SCHEME_PREFIX}${trustDomain}${segments.map((s) => `/${s}`).join("")}`);
  }

  /**
   * The Istio workload identity `spiffe://<td>/ns/<namespace>/sa/<serviceAccount>`. Each part must be
   * a non-empty string that is valid in its place of a SPIFFE ID.
   * @throws SpiffeError `ERR_SPIFFE_ID_INVALID` naming the missing or invalid part.
   */
  static fromIstio(identity: IstioIdentity): SpiffeId {
    if (typeof identity !== "object" || identity === null) {
      throw invalidId(String(identity), "the Istio identity must be an object");
    }
    for (const part of ["trustDomain", "namespace", "serviceAccount"] as const) {
      const value: unknown = identity[part];
      if (typeof value !== "string" || value.length === 0) {
        const got = typeof value === "string" ? "an empty string" : String(value);
        throw new SpiffeError(
          "ERR_SPIFFE_ID_INVALID",
          `invalid Istio identity: ${part} must be a non-empty string, got ${got}`,
          { reason: `${part} must be a non-empty string` },
        );
      }
    }
    return SpiffeId.fromSegments(
      identity.trustDomain,
      "ns",
      identity.namespace,
      "sa",
      identity.serviceAccount,
    );
  }

  /** The Istio parts when the path is exactly `/ns/<ns>/sa/<sa>`, else `undefined`. */
  toIstio(): IstioIdentity | undefined {
    const parts = this.path.split("/");
    if (parts.length !== 5 || parts[1] !== "ns" || parts[3] !== "sa") return undefined;
    return {
      trustDomain: this.trustDomain,
      namespace: parts[2] as string,
      serviceAccount: parts[4] as string,
    };
  }

  /** True when the ID belongs to `trustDomain`. */
  memberOf(trustDomain: string): boolean {
    return this.trustDomain === trustDomain;
  }

  /** True when both name the same ID (a string is compared in its canonical form). */
  equals(other: SpiffeId | string): boolean {
    return this.toString() === (typeof other === "string" ? other : other.toString());
  }

  /** The canonical `spiffe://<trust-domain><path>` form. */
  toString(): string {
    return `${SCHEME_PREFIX}${this.trustDomain}${this.path}`;
  }

  /** Serialises as the canonical string. */
  toJSON(): string {
    return this.toString();
  }
}

// Both builds of the package (ESM and CJS) accept each other's IDs as `instanceof SpiffeId`.
brandClass(SpiffeId, "@ambient/spiffe.SpiffeId");
