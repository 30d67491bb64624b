import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { type CaCertsPem, type CertificateAuthority, createCertificateAuthority } from "@ambient/spiffe/ca";
import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";
import { ControlPlaneError } from "./errors.js";
import { pemBlocks } from "./serving-certificate.js";

/** Issuer of the node tokens. */
export const TOKEN_ISSUER = "ambient-control-plane";
/** Audience of the node tokens (the CA's default). */
export const TOKEN_AUDIENCE = "istio-ca";
const TOKEN_KID = "ambient-control-plane-1";
const TOKEN_TTL_SECONDS = 24 * 60 * 60;

/** The CA and the token-signing key, created once and kept in the state directory. */
export interface MeshState {
  ca: CertificateAuthority;
  /** The CA's certificates and key now, which also sign the control plane's serving certificate. */
  cacerts(): CaCertsPem;
  /** Every root of the trust bundle now (two while a rotated root's predecessor is kept). */
  rootCertPem(): string;
  /**
   * Writes the CA as it is now to the state directory (`ca/` and the `root-cert.pem` node agents
   * read), after a root rotation, each file replaced atomically; or, for given material, to where
   * `persistGiven` keeps it. Nothing without either.
   */
  persistCa(): Promise<void>;
  /** Public JWKS that verifies node tokens. */
  jwks: { keys: JWK[] };
  /** Signs a bound-token stand-in for the ztunnel of `node`. */
  tokenFor(node: string): Promise<string>;
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/**
 * {@link readOptional} for a private key: one that group or others may read (copied with a permissive
 * umask, say) is made readable by its owner only before it is used, as the control plane writes it.
 */
async function readPrivate(path: string): Promise<string | undefined> {
  const text = await readOptional(path);
  if (text !== undefined && ((await stat(path)).mode & 0o077) !== 0) await chmod(path, 0o600);
  return text;
}

async function writeAtomic(path: string, text: string, mode = 0o644): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, text, { mode });
  await rename(tmp, path);
}

/** Options of {@link loadMeshState}. */
export interface MeshStateOptions {
  /** Given CA material (a Kubernetes Secret): wins over the state directory and is not written to it. */
  given?: CaCertsPem;
  /** The given material is the mesh's own self-signed root (`istio-ca-secret`), which may be rotated. */
  givenSelfSigned?: boolean;
  /** Where the given material is written back after a rotation (its Secret). */
  persistGiven?: (cacerts: Required<CaCertsPem>) => Promise<void>;
  /** Lifetime of a root generated here, and of each re-issued one. Default 10 years. */
  rootTtlSeconds?: number;
}

/** True when `ca-cert.pem` is itself one of the roots: a self-signed root, not a plugged-in CA. */
function isOwnRoot(cacerts: CaCertsPem): boolean {
  const signing = pemBlocks(cacerts.caCertPem)[0];
  return signing !== undefined && pemBlocks(cacerts.rootCertPem).includes(signing);
}

/**
 * Loads the CA and token key from `stateDir` (creating them on first start), or keeps them in
 * memory when `stateDir` is undefined. Files: `ca/{ca-cert,ca-key,root-cert}.pem`,
 * `token-key.jwk`, and `root-cert.pem` (the trust bundle node agents read).
 */
export async function loadMeshState(
  stateDir: string | undefined,
  trustDomain: string,
  stateOptions: MeshStateOptions = {},
): Promise<MeshState> {
  const given = stateOptions.given;
  try {
    // Given CA material (a Kubernetes Secret) wins over the state directory and is not written to it.
    let cacerts: CaCertsPem | undefined = given;
    let privateJwk: JWK | undefined;
    if (stateDir !== undefined) {
      const dir = join(stateDir, "ca");
      const [caCertPem, caKeyPem, rootCertPem, jwkText] = await Promise.all([
        readOptional(join(dir, "ca-cert.pem")),
        readPrivate(join(dir, "ca-key.pem")),
        readOptional(join(dir, "root-cert.pem")),
        readPrivate(join(stateDir, "token-key.jwk")),
      ]);
      if (
        cacerts === undefined &&
        caCertPem !== undefined &&
        caKeyPem !== undefined &&
        rootCertPem !== undefined
      ) {
        cacerts = { caCertPem, caKeyPem, rootCertPem };
      }
      if (jwkText !== undefined) privateJwk = JSON.parse(jwkText) as JWK;
    }
    if (cacerts === undefined) {
      // A generated 10-year root, exported with its key so the next start loads the same one.
      cacerts = (
        await createCertificateAuthority({
          trustDomain,
          ...(stateOptions.rootTtlSeconds === undefined
            ? {}
            : { rootTtlSeconds: stateOptions.rootTtlSeconds }),
        })
      ).exportCacerts();
      if (stateDir !== undefined) {
        const dir = join(stateDir, "ca");
        await writeAtomic(join(dir, "ca-key.pem"), cacerts.caKeyPem, 0o600);
        await writeAtomic(join(dir, "ca-cert.pem"), cacerts.caCertPem);
        await writeAtomic(join(dir, "root-cert.pem"), cacerts.rootCertPem);
      }
    }
    if (privateJwk === undefined) {
      const pair = await generateKeyPair("ES256", { extractable: true });
      privateJwk = { ...(await exportJWK(pair.privateKey)), kid: TOKEN_KID, alg: "ES256" };
      if (stateDir !== undefined) {
        await writeAtomic(join(stateDir, "token-key.jwk"), `${JSON.stringify(privateJwk)}\n`, 0o600);
      }
    }
    // The root kept in the state directory is the control plane's own (it generated it) unless an
    // operator put a plugged-in CA there; a given one is its own when the caller says so.
    const selfSigned = given === undefined ? isOwnRoot(cacerts) : stateOptions.givenSelfSigned === true;
    const ca = await createCertificateAuthority({
      trustDomain,
      cacerts,
      selfSigned,
      ...(stateOptions.rootTtlSeconds === undefined ? {} : { rootTtlSeconds: stateOptions.rootTtlSeconds }),
    });
    const rootCertPem = () => ca.exportCacerts().rootCertPem;
    if (stateDir !== undefined) await writeAtomic(join(stateDir, "root-cert.pem"), rootCertPem());
    // One write at a time, in order: a retirement right after a rotation lands after it.
    let persisting: Promise<void> = Promise.resolve();
    const persistGiven = stateOptions.persistGiven;
    const persistCa = (): Promise<void> => {
      if (given !== undefined) {
        if (persistGiven === undefined) return Promise.resolve();
        const run = persisting.then(() => persistGiven(ca.exportCacerts()));
        persisting = run.catch(() => undefined);
        return run;
      }
      if (stateDir === undefined) return Promise.resolve();
      const run = persisting.then(async () => {
        const now = ca.exportCacerts();
        const dir = join(stateDir, "ca");
        // A re-issued root keeps its key, so key and certificate match at every step of these writes.
        await writeAtomic(join(dir, "ca-key.pem"), now.caKeyPem, 0o600);
        await writeAtomic(join(dir, "ca-cert.pem"), now.caCertPem);
        await writeAtomic(join(dir, "root-cert.pem"), now.rootCertPem);
        await writeAtomic(join(stateDir, "root-cert.pem"), now.rootCertPem);
      });
      persisting = run.catch(() => undefined);
      return run;
    };
    const { d: _d, ...publicJwk } = privateJwk;
    const signingKey = await importJWK(privateJwk, "ES256");
    const kid = privateJwk.kid ?? TOKEN_KID;
    return {
      ca,
      cacerts: () => ca.exportCacerts(),
      rootCertPem,
      persistCa,
      jwks: { keys: [{ ...publicJwk, kid, alg: "ES256", use: "sig" }] },
      tokenFor(node: string) {
        return new SignJWT({
          "kubernetes.io": {
            namespace: "istio-system",
            serviceaccount: { name: "ztunnel" },
            node: { name: node },
          },
        })
          .setProtectedHeader({ alg: "ES256", kid })
          .setIssuer(TOKEN_ISSUER)
          .setAudience([TOKEN_AUDIENCE])
          .setSubject("system:serviceaccount:istio-system:ztunnel")
          .setIssuedAt()
          .setExpirationTime(Math.floor(Date.now() / 1000) + TOKEN_TTL_SECONDS)
          .sign(signingKey);
      },
    };
  } catch (cause) {
    if (cause instanceof ControlPlaneError) throw cause;
    throw new ControlPlaneError(
      "ERR_CONTROL_PLANE_STATE",
      `cannot load or create the control plane state${stateDir === undefined ? "" : ` in ${stateDir}`}: ${
        cause instanceof Error ? cause.message : String(cause)
      }`,
      { cause },
    );
  }
}

/** Writes `tokens/<node>.jwt` for every node. */
export async function writeNodeTokens(
  stateDir: string,
  state: MeshState,
  nodes: Iterable<string>,
): Promise<void> {
  for (const node of nodes) {
    if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(node)) continue;
    await writeAtomic(join(stateDir, "tokens", `${node}.jwt`), `${await state.tokenFor(node)}\n`, 0o600);
  }
}
